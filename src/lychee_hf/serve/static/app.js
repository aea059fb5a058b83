// The lychee-hf page: upload a document (progress from GET /v1/documents/{id}), ask a question (a POST answered as
// server-sent events), and show the answer as it streams, a gate-score bar per block, and the evidence highlighted
// in the document text. Plain browser JavaScript: no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { documentId: null, text: null, polling: null };

function headers(extra = {}) {
  const key = $("key").value.trim();
  localStorage.setItem("lychee-key", key);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function setStatus(element, message, isError = false) {
  element.textContent = message;
  element.classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------------------- documents
async function upload() {
  const file = $("file").files[0];
  const text = $("text").value;
  let body;
  let type = {};
  if (file) {
    body = new FormData();
    body.append("file", file);
  } else if (text.trim()) {
    body = JSON.stringify({ text });
    type = { "Content-Type": "application/json" };
  } else {
    setStatus($("status"), "Paste a document or choose a file first.", true);
    return;
  }
  try {
    const created = await (await api("/v1/documents", { method: "POST", body, headers: type })).json();
    await select(created.id);
    await listDocuments();
  } catch (error) {
    setStatus($("status"), `Upload refused: ${error.message}`, true);
  }
}

async function select(documentId) {
  clearInterval(state.polling);
  state.documentId = documentId;
  state.text = null;
  enableAsking(false);
  if (!documentId) return;
  await poll();
  state.polling = setInterval(poll, 300);
}

async function poll() {
  try {
    const doc = await (await api(`/v1/documents/${state.documentId}`)).json();
    $("progress").max = doc.blocks_total || 1;
    $("progress").value = doc.blocks_done;
    const name = doc.name ? `${doc.name}: ` : "";
    const blocks = `${doc.blocks_done} of ${doc.blocks_total} blocks`;
    setStatus($("status"), `${name}${doc.status}, ${doc.tokens} tokens, ${blocks}`, doc.status === "failed");
    if (doc.status === "failed") setStatus($("status"), `compression failed: ${doc.error}`, true);
    if (doc.status === "ready" || doc.status === "failed") {
      clearInterval(state.polling);
      listDocuments();
      if (doc.status === "ready") {
        state.text = await (await api(`/v1/documents/${doc.id}/text`)).text();
        showText([]);
        enableAsking(true);
      }
    }
  } catch (error) {
    clearInterval(state.polling);
    setStatus($("status"), error.message, true);
  }
}

async function listDocuments() {
  try {
    const { documents } = await (await api("/v1/documents")).json();
    const select = $("documents");
    select.replaceChildren(new Option("your documents…", ""));
    for (const doc of documents) {
      select.add(new Option(`${doc.name || doc.id} (${doc.status}, ${doc.tokens} tokens)`, doc.id));
    }
    select.value = state.documentId || "";
  } catch (_) { /* no key yet */ }
}

function enableAsking(on) {
  $("question").disabled = !on;
  $("ask").disabled = !on;
}

// ---------------------------------------------------------------------------------------------- questions
async function ask() {
  const question = $("question").value.trim();
  if (!question) return;
  $("answer").textContent = "";
  $("evidence").replaceChildren();
  $("chart").replaceChildren();
  setStatus($("answer-note"), "reading the document…");
  showText([]);
  $("ask").disabled = true;
  const blocks = [];
  try {
    const response = await api(`/v1/documents/${state.documentId}/answers`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, stream: true }),
    });
    for await (const [event, data] of serverSentEvents(response)) {
      if (event === "token") $("answer").textContent += data.text;
      if (event === "block") { blocks.push(data); drawChart(blocks); }
      if (event === "answer") finish(data, blocks);
      if (event === "error") throw new Error(data.error.message);
    }
  } catch (error) {
    setStatus($("answer-note"), error.message, true);
  } finally {
    $("ask").disabled = false;
  }
}

async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const field = (name) => (lines.find((l) => l.startsWith(name + ": ")) || "").slice(name.length + 2);
      yield [field("event"), JSON.parse(field("data"))];
    }
  }
}

function finish(result, blocks) {
  $("answer").textContent = result.answer;
  const read = blocks.filter((b) => b.kept).length;
  const found = result.not_found ? "not found in the document; " : "";
  setStatus($("answer-note"), `${found}read ${read} of ${blocks.length} blocks, ${result.answer_tokens} answer tokens`);
  const evidence = result.evidence || [];
  for (const item of evidence) {
    const li = document.createElement("li");
    li.textContent = `“${item.text}” (block ${item.block}, characters ${item.start}–${item.end})`;
    li.addEventListener("click", () => document.querySelector(`mark[data-start="${item.start}"]`)?.scrollIntoView());
    $("evidence").append(li);
  }
  if (result.evidence === null) setStatus($("answer-note"), $("answer-note").textContent + "; this bank keeps no text");
  showText(evidence);
  $("chart").dataset.done = "true";
}

// ---------------------------------------------------------------------------------------------- drawing
function drawChart(blocks) {
  const svg = $("chart");
  const width = svg.clientWidth || 500;
  const height = 120;
  const step = width / Math.max(blocks.length, 1);
  svg.replaceChildren();
  blocks.forEach((block, i) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const barHeight = Math.max(2, block.gate_score * (height - 4));
    rect.setAttribute("x", (i * step + step * 0.1).toFixed(1));
    rect.setAttribute("width", Math.max(1, step * 0.8).toFixed(1));
    rect.setAttribute("y", (height - barHeight).toFixed(1));
    rect.setAttribute("height", barHeight.toFixed(1));
    rect.setAttribute("class", `bar ${block.kept ? "read" : "skipped"}`);
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `block ${block.block}: gate ${block.gate_score} (${block.gate_decision})` +
      (block.kept ? `\nmemory: ${block.memory}` : "");
    rect.append(title);
    svg.append(rect);
  });
}

function showText(evidence) {
  const pre = $("document-text");
  pre.replaceChildren();
  if (state.text === null) return;
  const spans = [...evidence].sort((a, b) => a.start - b.start);
  let at = 0;
  for (const span of spans) {
    if (span.start < at) continue; // overlapping passages: the first one shown
    pre.append(document.createTextNode(state.text.slice(at, span.start)));
    const mark = document.createElement("mark");
    mark.dataset.start = span.start;
    mark.textContent = state.text.slice(span.start, span.end);
    pre.append(mark);
    at = span.end;
  }
  pre.append(document.createTextNode(state.text.slice(at)));
  pre.querySelector("mark")?.scrollIntoView({ block: "nearest" });
}

// ---------------------------------------------------------------------------------------------- wiring
$("key").value = localStorage.getItem("lychee-key") || "";
$("upload").addEventListener("click", upload);
$("ask").addEventListener("click", ask);
$("question").addEventListener("keydown", (event) => { if (event.key === "Enter") ask(); });
$("documents").addEventListener("change", (event) => select(event.target.value));
$("key").addEventListener("change", listDocuments);
listDocuments();
