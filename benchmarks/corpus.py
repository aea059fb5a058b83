"""Scale-out throughput: compressing a corpus with 1 and N processes, and questions over one bank batched vs one
by one, in one run.

    python benchmarks/corpus.py                                   # embedded default, 8 documents of 512 tokens
    python benchmarks/corpus.py --model PATH --documents 32 --tokens 4k --processes 2,4 --questions 16

Corpus: `--documents` needle-in-a-haystack documents of `--tokens` tokens (`lychee_hf.eval`), compressed by
`lychee-hf compress --corpus` under `torchrun --nproc_per_node P` for each P, and in one plain process with every
core and with one thread (torchrun gives each of several processes one thread; the baseline is one process with
every core). Reported: tokens/s of the
compression phase (the manifest's tokens over the wall time from the split to the last bank), wall time of the
whole command (start-up and model load included), and the ratio to one process; the manifests of all runs must
agree. Questions: `--questions` questions over the first document's bank through `answer_questions`, all in one
batch vs one per batch (same answers required), questions/s and the ratio.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import make_niah, parse_length
from lychee_hf.scale.corpus import read_corpus_manifest
from lychee_hf.scale.questions import answer_questions

SUMMARY = re.compile(r"(\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s, (\d+) process")


def compress(model: str, corpus: Path, out: Path, processes: int, threads: int | None = None) -> dict:
    """Runs `lychee-hf compress --corpus` with `processes` processes (`threads` torch threads for one process,
    default all); returns its timings."""
    if processes == 1:
        launcher = [sys.executable, "-m"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher.append("-m")
    command = [*launcher, "lychee_hf.cli", "compress", "--model", model, "--corpus", str(corpus), "--out", str(out)]
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    result = subprocess.run([*command, "--quiet"], capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"compress with {processes} processes failed:\n{result.stderr[-2000:]}")
    tokens, seconds, rate, _ = SUMMARY.search(result.stdout).groups()
    threads = threads or (torch.get_num_threads() if processes == 1 else 1)  # torchrun: one thread per process
    run = {"processes": processes, "threads": threads, "tokens": int(tokens), "seconds": float(seconds)}
    return {**run, "rate": float(rate), "wall": wall}


def ask(model, tokenizer, banks: Path, questions: list[str], batch_size: int, out: Path) -> tuple[float, list[str]]:
    path = out.with_suffix(".questions.jsonl")
    path.write_text("".join(json.dumps({"document": "doc-0", "question": q}) + "\n" for q in questions))
    started = time.perf_counter()
    answer_questions(model, tokenizer, banks, path, out, batch_size=batch_size, show_progress=False)
    seconds = time.perf_counter() - started
    return seconds, [json.loads(line)["answer"] for line in out.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: the embedded SmolLM2-135M model)")
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--tokens", default="512", help="tokens per document")
    parser.add_argument("--processes", default="2", help="process counts besides 1 (comma-separated)")
    parser.add_argument("--questions", type=int, default=8, help="questions over one bank")
    args = parser.parse_args()
    if not args.model:
        from lychee_hf.default_model import ensure_default_model

        args.model = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = make_niah(tokenizer, parse_length(args.tokens), max(args.documents, args.questions), seed=0)
    work = Path(tempfile.mkdtemp(prefix="lychee-corpus-bench-"))
    corpus = work / "docs.jsonl"
    rows = [{"id": f"doc-{i}", "context": e.context} for i, e in enumerate(examples[: args.documents])]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))

    runs, manifests = [], []
    settings = [(1, None), (1, 1)] + [(int(p), None) for p in args.processes.split(",") if int(p) > 1]
    for processes, threads in settings:
        out = work / f"banks-{processes}-{threads or 'all'}"
        runs.append(compress(args.model, corpus, out, processes, threads))
        entries = read_corpus_manifest(out)["entries"]
        manifests.append([(e["id"], e["status"], e.get("tokens"), e.get("blocks")) for e in entries])
    if any(manifest != manifests[0] for manifest in manifests):
        raise RuntimeError("the runs wrote different manifests")
    base = runs[0]
    print(f"corpus: {args.documents} documents x {args.tokens} tokens ({base['tokens']} tokens), model {args.model}")
    header = ["processes", "threads", "compress s", "tokens/s", "ratio", "wall s", "ratio"]
    print("  ".join(f"{name:>{width}}" for name, width in zip(header, (9, 7, 10, 8, 5, 7, 5))))
    for run in runs:
        print(
            f"{run['processes']:>9}  {run['threads']:>7}  {run['seconds']:>10.1f}  {run['rate']:>8.0f}  "
            f"{run['rate'] / base['rate']:>5.2f}  {run['wall']:>7.1f}  {base['wall'] / run['wall']:>5.2f}"
        )

    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    questions = [e.question for e in examples[: args.questions]]
    banks = work / "banks-1-all"
    one_seconds, one_answers = ask(model, tokenizer, banks, questions, 1, work / "one.jsonl")
    batch_seconds, batch_answers = ask(model, tokenizer, banks, questions, len(questions), work / "batch.jsonl")
    if batch_answers != one_answers:
        raise RuntimeError("batched answers differ from one-by-one answers")
    blocks = manifests[0][0][3]
    print(f"\nquestions: {len(questions)} over one bank ({blocks} blocks), same answers batched and one by one")
    print(f"{'mode':>12}  {'seconds':>7}  {'questions/s':>11}  {'ratio':>5}")
    for name, seconds in (("one by one", one_seconds), ("one batch", batch_seconds)):
        print(f"{name:>12}  {seconds:>7.1f}  {len(questions) / seconds:>11.3f}  {one_seconds / seconds:>5.2f}")


if __name__ == "__main__":
    main()
