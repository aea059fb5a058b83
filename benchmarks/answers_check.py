"""Answers a user can check: evidence recall and precision, and "not found" on questions the document cannot answer.

    python benchmarks/answers_check.py                       # embedded default, held-out facts at 2K, n=24 each
    python benchmarks/answers_check.py --lengths 2k,8k --n 24

For each held-out single-fact document (families and phrasings training never saw) the question is asked twice:
its own question (answerable) and another document's question whose entity and answer this one does not contain
(unanswerable, `facts-heldout-unanswerable`). The model answers with `answer_not_found` on; the answer it would
have generated is kept too, and the one the reasoner generated from its working memory (the default copies its
answer from the evidence), so the table gives every policy from one run. Per length:

- answerable: sub-EM with "not found" on and off and from the memory, the "not found" rate, the gate's gold-block
  recall, evidence recall (a quoted passage overlaps the gold fact's characters) and precision (quoted passages
  that do);
- unanswerable: the "not found" rate (the answer an honest system gives).
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, parse_length, supporting_chunks
from lychee_hf.metrics import substring_match
from lychee_hf.text_banks import compress_text

sys.path.insert(0, str(Path(__file__).parent))
from genres_check import ask  # noqa: E402  (the same three answers per question)


def interval(hits: float, n: int) -> str:
    """The rate and its 95% normal-approximation half-width."""
    rate = hits / n if n else 0.0
    return f"{rate:.3f} ± {1.96 * (rate * (1 - rate) / n) ** 0.5:.3f}" if n else "-"


def overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in spans)


def run_length(model, tokenizer, length: int, n: int, seed: int) -> dict:
    answerable = TASKS["facts-heldout"](tokenizer, length, n + 1, seed=seed)[:n]
    unanswerable = TASKS["facts-heldout-unanswerable"](tokenizer, length, n, seed=seed)
    counted = ["em_on", "em_off", "em_memory", "nf_answerable", "gold_read", "ev_recall", "ev_items", "ev_good"]
    stats = dict.fromkeys(counted, 0)
    stats["nf_unanswerable"] = 0
    started = time.perf_counter()
    for example, other in zip(answerable, unanswerable):
        bank = compress_text(model, tokenizer, example.context, show_progress=False)
        trace, answers = ask(model, tokenizer, bank, example.question)
        stats["em_on"] += substring_match(answers["given"], example.answers)
        stats["em_off"] += substring_match(answers["not_found_off"], example.answers)
        stats["em_memory"] += substring_match(answers["memory"], example.answers)
        stats["nf_answerable"] += trace.not_found
        gold_blocks = set(supporting_chunks(example, tokenizer, model.config.chunk_size))
        stats["gold_read"] += gold_blocks <= {r.block_index for r in trace if r.kept}
        evidence = trace.evidence(tokenizer) or []
        good = [item for item in evidence if overlaps((item.start, item.end), example.supporting)]
        stats["ev_recall"] += bool(good)
        stats["ev_items"] += len(evidence)
        stats["ev_good"] += len(good)
        trace, _ = ask(model, tokenizer, bank, other.question)
        stats["nf_unanswerable"] += trace.not_found
    stats["seconds"] = time.perf_counter() - started
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the embedded SmolLM2-135M model)")
    parser.add_argument("--lengths", default="2k")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model is None:
        from lychee_hf.default_model import ensure_default_model

        args.model = str(ensure_default_model(verbose=False))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; held-out facts, n={args.n} per length, seed {args.seed}, greedy"
    )
    print("| length | sub-EM (not found on) | sub-EM (off) | sub-EM, answer from memory | not found, answerable | "
          "gate gold-block recall | evidence recall | evidence precision | not found, unanswerable | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length in (parse_length(x) for x in args.lengths.split(",")):
        s, n = run_length(model, tokenizer, length, args.n, args.seed), args.n
        cells = [
            f"{length // 1000}K",
            interval(s["em_on"], n),
            interval(s["em_off"], n),
            interval(s["em_memory"], n),
            interval(s["nf_answerable"], n),
            interval(s["gold_read"], n),
            interval(s["ev_recall"], n),
            interval(s["ev_good"], s["ev_items"]),
            interval(s["nf_unanswerable"], n),
            f"{s['seconds']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
