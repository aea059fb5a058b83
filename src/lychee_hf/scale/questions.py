"""Questions at scale: many questions over the banks of a compressed corpus (or over one bank), batched per bank.

    lychee-hf ask --bank BANKS_DIR --questions Q.jsonl --out A.jsonl
    accelerate launch -m lychee_hf.cli ask --bank BANKS_DIR --questions Q.jsonl --out A.jsonl

Each line of the questions file is a JSON object with `question`, `document` (an id of the corpus manifest, a string
or a number as the corpus names it; not needed over a single bank) and optionally `id`; `id` and `document` are
copied to the answer as given. Questions over the same bank are answered
together, `batch_size` per `generate` call, through a view of the bank that reads each block from storage once
per batch (`SharedBlocks`), however many questions read it. Batches are split across processes
(`split_between_processes`); the main process writes the answers in input order, one JSON object per line:
`line`, `id` (when given), `document`, `question`, and `answer` or `error` (a line that names an unknown
document, a failed one, or no question gets its reason; the others are answered).
"""

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from ..files import check_output_file, read_json_lines, write_atomically
from ..modeling import LycheeMemoryBank, count_decoded, kv_nbytes_of, left_pad, stop_and_pad_ids
from .corpus import id_text
from .corpus_folder import CORPUS_MANIFEST, read_corpus_manifest
from .distributed import distributed_state, gather_lists, process_progress

SINGLE_BANK = ""  # the document key of every question asked over a single bank


@dataclass
class QuestionRow:
    """One line of the questions file: its number, the bank it asks (`document`: a corpus id, or SINGLE_BANK), the
    question, its `id` and `document` as the line gives them, and an error if it cannot be asked."""

    line: int
    document: str
    question: str | None
    id: object = None
    error: str | None = None
    given_document: object = None

    def result(self, **fields) -> dict:
        row = {"line": self.line, **({"id": self.id} if self.id is not None else {})}
        return {**row, "document": self.given_document, "question": self.question, **fields}


def read_questions(path: str | Path, over_corpus: bool, encoding: str = "utf-8") -> list[QuestionRow]:
    """The questions of a JSONL file; unusable lines carry their reason in `error`.

    Args:
        path (`str` or `Path`): one JSON object per line (`question`, `document`, optional `id`).
        over_corpus (`bool`): whether questions must name their `document` (a corpus) or not (one bank).
        encoding (`str`): the file's text encoding; a line that does not decode fails alone.
    """
    rows = []
    for line in read_json_lines(path, "questions", encoding):
        record = line.record or {}
        question, given = record.get("question"), record.get("document")
        key = SINGLE_BANK if not over_corpus else id_text(given)
        row = QuestionRow(line.number, key or "", question, record.get("id"), given_document=given)
        if line.error is not None:
            row.error, row.question = line.error, None
        elif not isinstance(question, str) or not question.strip():
            row.error, row.question = "no non-empty string field 'question'", None
        elif over_corpus and given is None:
            row.error = "no 'document' field naming a document of the corpus"
        elif over_corpus and not key:
            row.error = f"'document' {json.dumps(given)[:40]} is not an id (a non-empty string or a number)"
        rows.append(row)
    return rows


class SharedBlocks:
    """A read-through view of a bank for one batch of questions: each block comes from storage once per batch.

    `generate` reads block i once per question that keeps it (and a scoring gate reads every block ahead per
    question); over a disk bank that is one read per question. This view keeps the blocks it has read, oldest
    dropped first once they exceed `max_bytes` (the block in use always stays), so a bank that fits is read once
    for the whole batch, and a larger one still shares every reasoner read between the questions of a step.

    Args:
        bank (`LycheeMemoryBank`): the bank (everything but `block` is the bank's own).
        max_bytes (`int`): host memory the kept blocks may take.
    """

    def __init__(self, bank: LycheeMemoryBank, max_bytes: int = 2**30):
        self.bank = bank
        self.max_bytes = max_bytes
        self.reads = 0
        self._kept: OrderedDict[int, object] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.bank)

    def __getattr__(self, name: str):
        return getattr(self.bank, name)

    def block(self, index: int):
        if index in self._kept:
            self._kept.move_to_end(index)
            return self._kept[index]
        block = self.bank.block(index)
        self.reads += 1
        self._kept[index] = block
        self._bytes += _block_bytes(block)
        while self._bytes > self.max_bytes and len(self._kept) > 1:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= _block_bytes(dropped)
        return block


def _block_bytes(block) -> int:
    return kv_nbytes_of(block.keys) + kv_nbytes_of(block.values) + kv_nbytes_of(block.mask)


@dataclass
class QuestionsSummary:
    """What `answer_questions` did: questions, answered, failed, batches, wall seconds, processes, output."""

    questions: int
    answered: int
    failed: int
    batches: int
    seconds: float
    processes: int
    out: Path

    def describe(self) -> str:
        rate = self.answered / self.seconds if self.seconds > 0 else 0.0
        failed = f", {self.failed} failed (their 'error' says why)" if self.failed else ""
        return (
            f"{self.answered} of {self.questions} questions answered{failed} in {self.batches} batches, "
            f"{self.seconds:.1f} s ({rate:.2f} questions/s, {self.processes} "
            f"process{'es' if self.processes > 1 else ''})\nwrote {self.out}"
        )


def answer_questions(
    model,
    tokenizer,
    memory: str | Path,
    questions: str | Path,
    out: str | Path,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    state: PartialState | None = None,
    max_cached_bytes: int = 2**30,
    show_progress: bool = True,
    overwrite: bool = False,
    gate_policy: dict | None = None,
    encoding: str = "utf-8",
) -> QuestionsSummary:
    """Answers every question of a JSONL file over a compressed corpus (or one bank) and writes them in order.

    Run it in every process of a launch: batches are split across processes and the main process writes `out`.
    Answers are greedy unless the model's generation config samples; a batch gives the same answers as its
    questions asked one by one.

    Args:
        model (`LycheeMemoryForCausalLM`): the model that compressed the banks, on `state.device`.
        tokenizer: its tokenizer.
        memory (`str` or `Path`): a folder written by `compress_corpus` (`corpus.json`) or one bank folder.
        questions (`str` or `Path`): JSONL questions (see the module docstring).
        out (`str` or `Path`): a new JSONL file for the answers (an existing one is refused).
        batch_size (`int`): questions per `generate` call (all over the same bank).
        max_new_tokens (`int`, *optional*): answer length (default: the model's `max_answer_tokens`).
        state (`PartialState`, *optional*): the accelerate state (default: `distributed_state()`).
        max_cached_bytes (`int`): host memory a batch may keep its bank's blocks in (`SharedBlocks`).
        show_progress (`bool`): a progress bar per process.
        overwrite (`bool`): replace an existing `out` (once every answer is ready) instead of refusing it.
        gate_policy (`dict`, *optional*): `gate_threshold`, `gate_max_blocks`, `gate_keep_last`, `gate_revisit`
            for every question (default: the model's), as `generate` takes them.
        encoding (`str`): the questions file's text encoding.

    Returns:
        `QuestionsSummary` (the same on every process).

    Raises:
        `ValueError` when the corpus (or bank) was made by another model or settings, or `out` is the questions
        file; the errors of `check_output_file` for `out`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    state = state or distributed_state()
    out, memory = Path(out), Path(memory)
    check_output_file(out, overwrite, "--out")
    if out.exists() and out.resolve() == Path(questions).resolve():
        raise ValueError(f"--out {out} is the questions file: name a new file for the answers")
    over_corpus = (memory / CORPUS_MANIFEST).is_file()
    fingerprint = model.memory_fingerprint()
    if over_corpus:
        _check_corpus_model(memory, fingerprint)
    else:
        LycheeMemoryBank.from_pretrained(memory).check_compatible(fingerprint)  # one clear error, before any work
    banks = _bank_folders(memory) if over_corpus else {SINGLE_BANK: memory}
    rows = read_questions(questions, over_corpus, encoding)
    for row in rows:
        if row.error is None and not isinstance(banks.get(row.document), Path):
            row.error = banks.get(row.document) or f"document {row.document!r} is not in the corpus"
    batches = _batches(rows, batch_size)
    answer = _BatchAnswerer(model, tokenizer, fingerprint, max_new_tokens, max_cached_bytes, dict(gate_policy or {}))

    started = time.perf_counter()
    with state.split_between_processes(batches) as mine:
        progress = process_progress(state, sum(len(b) for b in mine), "answering", "question", show_progress)
        results = []
        for batch in mine:
            results += answer(banks[batch[0].document], batch)
            progress.update(len(batch))
        progress.close()
    results = dict(gather_lists(state, results))
    elapsed = time.perf_counter() - started
    ordered = [results.get(row.line) or row.result(error=row.error) for row in rows]
    if state.is_main_process:
        write_atomically(out, "".join(_json_line(result) for result in ordered))
    state.wait_for_everyone()
    failed = sum(1 for result in ordered if "error" in result)
    return QuestionsSummary(len(rows), len(rows) - failed, failed, len(batches), elapsed, state.num_processes, out)


def _check_corpus_model(corpus_dir: Path, fingerprint: dict) -> None:
    """Refuses a corpus compressed by another model or settings (every question would fail alike)."""
    made_with = read_corpus_manifest(corpus_dir).get("fingerprint")
    try:
        LycheeMemoryBank(fingerprint=made_with if isinstance(made_with, dict) else {}).check_compatible(fingerprint)
    except ValueError as error:
        raise ValueError(f"{corpus_dir}: {error}") from None


def _bank_folders(corpus_dir: Path) -> dict[str, Path | str]:
    """Document id -> its bank folder, or why it has none (the manifest's failure reason)."""
    folders = {}
    for entry in read_corpus_manifest(corpus_dir)["entries"]:
        if entry["status"] == "ok":
            folders[entry["id"]] = corpus_dir / entry["bank"]
        else:
            folders.setdefault(entry["id"], f"document {entry['id']!r} was not compressed: {entry['reason']}")
    return folders


def _batches(rows: list[QuestionRow], batch_size: int) -> list[list[QuestionRow]]:
    """Askable questions grouped by document (first appearance order), `batch_size` at a time."""
    by_document: dict[str, list[QuestionRow]] = {}
    for row in rows:
        if row.error is None:
            by_document.setdefault(row.document, []).append(row)
    return [group[i : i + batch_size] for group in by_document.values() for i in range(0, len(group), batch_size)]


@dataclass
class _BatchAnswerer:
    """Answers one batch over one bank: `(line, result)` per question. A batch the model refuses is retried one
    question at a time, so only the offending question gets the error."""

    model: object
    tokenizer: object
    fingerprint: dict
    max_new_tokens: int | None
    max_cached_bytes: int
    gate_policy: dict

    def __call__(self, folder: Path, batch: list[QuestionRow]) -> list[tuple[int, dict]]:
        try:
            bank = LycheeMemoryBank.from_pretrained(folder)
            bank.check_compatible(self.fingerprint)
        except (ValueError, OSError) as error:
            return [(row.line, row.result(error=str(error))) for row in batch]
        questions = [row.question for row in batch]
        try:
            answers = generate_answers(
                self.model,
                self.tokenizer,
                bank,
                questions,
                self.max_new_tokens,
                self.max_cached_bytes,
                self.gate_policy,
            )
        except ValueError as error:
            if len(batch) == 1:
                return [(batch[0].line, batch[0].result(error=str(error)))]
            return [item for row in batch for item in self(folder, [row])]
        return [(row.line, row.result(answer=answer)) for row, answer in zip(batch, answers)]


def generate_answers(
    model,
    tokenizer,
    bank: LycheeMemoryBank,
    questions: list[str],
    max_new_tokens: int | None = None,
    max_cached_bytes: int = 2**30,
    gate_policy: dict | None = None,
) -> list[str]:
    """Answers `questions` over one bank in one `generate` call (questions left-padded, the bank read through
    `SharedBlocks`), each answer cut at its first stop token as when asked alone; `gate_policy` as `generate`
    takes it."""
    encoded = [torch.tensor(tokenizer.encode(q, add_special_tokens=False), dtype=torch.long) for q in questions]
    empty = [q for q, ids in zip(questions, encoded) if not ids.numel()]
    if empty:
        raise ValueError(f"question {empty[0]!r} is empty after tokenization")
    eos_ids, pad_id = stop_and_pad_ids(model.generation_config)
    ids, mask = left_pad(encoded, pad_id)
    shared = SharedBlocks(bank, max_cached_bytes)
    sequences = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        bank=[shared] * len(questions),
        show_progress=False,
        tokenizer=tokenizer,  # as the single-question path: "not found" checks names against the read text
        **(gate_policy or {}),
        **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}),
    )
    answers = []
    for row in sequences[:, ids.shape[1] :]:
        answer = row[: count_decoded(row, eos_ids, pad_id)]
        answers.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
    return answers


def _json_line(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False) + "\n"
