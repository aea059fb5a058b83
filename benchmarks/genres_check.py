"""Real-document genres: answers, the gate's gold blocks, evidence and "not found", per held-out genre.

    python benchmarks/genres_check.py                              # embedded default, held-out genres at 2K, n=24
    python benchmarks/genres_check.py --lengths 2k,8k --n 24 --out genres.jsonl
    python benchmarks/genres_check.py --table genres.jsonl          # the table of a (partial) log

Each held-out genre (contract, report, FAQ: documents whose every block shares the title and topic words, with
distractor facts of the asked kind throughout) gives `--n` documents (`genres-heldout:<genre>`). Every document is
compressed once and asked two questions with `answer_not_found` on: its own (answerable) and one about a subject of
its genre that it never names (unanswerable, as `genres-heldout-unanswerable`). The answer the model would have
generated is kept too, so both policies come from one run. One more row pools the training genres (minutes,
manual page, e-mail thread, release notes; `genres`), to show the gap. Per row:

- sub-EM with "not found" on and off, sub-EM of the answer the reasoner generates from its working memory (what
  `answer_from="memory"` answers; the default copies its answer from the evidence), and the "not found" rate on
  the answerable questions;
- gate gold-block recall: every block holding the gold fact's characters was read;
- evidence recall: a quoted passage (`trace.evidence(tokenizer)`) overlaps the gold fact's characters;
- "not found" on the unanswerable questions (what an honest system answers).

Documents are measured in turn across the groups (document 0 of each, then document 1, ...), so that a run cut
short still covers every genre. Intervals are 95% Wilson intervals. `--out` appends one JSON line per document as it
is measured (answers, genre, fact kind, blocks read, evidence, why "not found") for reading the failures;
`--table LOG` prints the table of such a log, finished or not.
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import torch
import transformers
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, parse_length, supporting_chunks
from lychee_hf.data.genres import GENRES, genres, make_genre_examples
from lychee_hf.data.relations import HELD_OUT, TRAIN
from lychee_hf.metrics import substring_match
from lychee_hf.modeling import stop_and_pad_ids
from lychee_hf.modeling.extract_lychee import extract_answer
from lychee_hf.text_banks import compress_text

_Z = 1.96  # 95%
_RATES = ["em_on", "em_off", "em_memory", "nf_answerable", "gold_read", "ev_recall", "nf_unanswerable"]


def wilson(hits: int, n: int) -> str:
    """The rate and its 95% Wilson score interval, e.g. `0.750 [0.551, 0.880]`."""
    if not n:
        return "-"
    rate = hits / n
    centre = (rate + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
    half = _Z * ((rate * (1 - rate) + _Z**2 / (4 * n)) / n) ** 0.5 / (1 + _Z**2 / n)
    return f"{rate:.3f} [{max(0.0, centre - half):.3f}, {min(1.0, centre + half):.3f}]"


def overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in spans)


def ask(model, tokenizer, bank, question: str) -> tuple:
    """Asks with the model's settings and `answer_not_found` on. Returns `(trace, answers)`: the answer given
    (`"given"`), the one it would give with "not found" off (`"not_found_off"`) and the one the reasoner generated
    from its working memory (`"memory"`: what `answer_from="memory"` gives), so one run measures every policy."""
    ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
    out = model.generate(
        input_ids=ids,
        bank=bank,
        return_dict_in_generate=True,
        do_sample=False,
        answer_not_found=True,
        tokenizer=tokenizer,
        show_progress=False,
    )
    trace = out.trace[0]
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    given = decode(trace.answer_ids)
    replaced = trace.not_found or trace.answer_source == "evidence"
    memory = decode(trace.generated_answer_ids) if replaced else given
    not_found_off = given
    if trace.not_found:
        span = None
        if model.config.answer_from == "evidence":
            span = extract_answer(model, tokenizer, trace, stop_and_pad_ids(model.generation_config)[0][0])
        not_found_off = memory if span is None else span
    return trace, {"given": given, "not_found_off": not_found_off, "memory": memory}


def run_pair(model, tokenizer, group: str, example, other) -> dict:
    """Compresses one document and asks it its own question and its unanswerable one: the log record."""
    assert example.context == other.context
    started = time.perf_counter()
    bank = compress_text(model, tokenizer, example.context, show_progress=False)
    trace, answers = ask(model, tokenizer, bank, example.question)
    gold_blocks = set(supporting_chunks(example, tokenizer, model.config.chunk_size))
    read = {r.block_index for r in trace if r.kept}
    evidence = trace.evidence(tokenizer) or []
    memory = tokenizer.decode(trace[-1].memory_ids, skip_special_tokens=True) if len(trace) else ""
    read_spans = [list(trace.document_text.chars[index]) for index in sorted(read)]
    rates = {
        "em_on": substring_match(answers["given"], example.answers),
        "em_off": substring_match(answers["not_found_off"], example.answers),
        "em_memory": substring_match(answers["memory"], example.answers),
        "nf_answerable": trace.not_found,
        "gold_read": gold_blocks <= read,
        "ev_recall": any(overlaps((item.start, item.end), example.supporting) for item in evidence),
    }
    reason = trace.not_found_reason
    trace, other_answers = ask(model, tokenizer, bank, other.question)
    rates["nf_unanswerable"] = trace.not_found
    return {
        "group": group, "id": example.id, "genre": example.meta["genre"], "kind": example.meta["kind"],
        "length": example.meta["target_tokens"], "question": example.question, "gold": example.answers[0],
        "answer": answers["given"], "generated": answers["not_found_off"],
        "memory_answer": answers["memory"], "gold_blocks": sorted(gold_blocks), "read": sorted(read),
        "evidence": [item.text for item in evidence], "memory": memory, "read_spans": read_spans,
        "unanswerable_question": other.question,
        "unanswerable_answer": other_answers["given"],
        "unanswerable_generated": other_answers["not_found_off"], "not_found_reason": reason,
        "unanswerable_reason": trace.not_found_reason,
        **{name: int(value) for name, value in rates.items()}, "seconds": time.perf_counter() - started,
    }  # fmt: skip


def row(name: str, length: int, records: list[dict]) -> str:
    n = len(records)
    # A rate older logs lack (em_memory before answer_from="evidence") shows as "-".
    rates = [wilson(sum(r[rate] for r in records), n) if all(rate in r for r in records) else "-" for rate in _RATES]
    cells = [name, f"{length // 1000}K", str(n), *rates, f"{sum(record['seconds'] for record in records):.0f}"]
    return "| " + " | ".join(cells) + " |"


def table(records: list[dict]) -> list[str]:
    """The markdown table of the records: per held-out genre, pooled, and the training genres pooled."""
    lines = [
        "| genres | length | n | sub-EM (not found on) | sub-EM (off) | sub-EM, answer from memory | not found, "
        "answerable | gate gold-block recall | evidence recall | not found, unanswerable | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for length in sorted({record["length"] for record in records}):
        at = [record for record in records if record["length"] == length]
        held_out = [record for record in at if record["group"] != "training"]
        for genre in genres(HELD_OUT):
            part = [record for record in held_out if record["genre"] == genre.name]
            if part:
                lines.append(row(genre.name, length, part))
        if held_out:
            lines.append(row("**held-out, pooled**", length, held_out))
        training = [record for record in at if record["group"] == "training"]
        if training:
            lines.append(row("training: " + ", ".join(g.name for g in genres(TRAIN)), length, training))
    return lines


def groups(tokenizer, length: int, n: int, seed: int, training: bool) -> dict[str, tuple[list, list]]:
    """Per group (each held-out genre, then the training genres): its documents, asked and unasked questions."""
    chosen = {}
    for genre in genres(HELD_OUT):
        task = f"genres-heldout:{genre.name}"
        unanswerable = make_genre_examples(task, [GENRES[genre.name]], tokenizer, length, n, seed, unanswerable=True)
        chosen[genre.name] = (TASKS[task](tokenizer, length, n, seed=seed), unanswerable)
    if training:
        unanswerable = make_genre_examples("genres", genres(TRAIN), tokenizer, length, n, seed, unanswerable=True)
        chosen["training"] = (TASKS["genres"](tokenizer, length, n, seed=seed), unanswerable)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the embedded SmolLM2-135M model)")
    parser.add_argument("--lengths", default="2k")
    parser.add_argument("--n", type=int, default=24, help="documents per held-out genre and for the training row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-training", action="store_true", help="skip the training genres' row")
    parser.add_argument("--out", help="append one JSON line per document here as it is measured")
    parser.add_argument("--table", metavar="LOG", help="only print the table of a (partial) --out log")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as handle:
            print("\n".join(table([json.loads(line) for line in handle if line.strip()])))
        return
    if args.model is None:
        from lychee_hf.default_model import ensure_default_model

        args.model = str(ensure_default_model(verbose=False))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    torch.set_grad_enabled(False)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"torch {torch.__version__}, transformers {transformers.__version__}; {args.model}; n={args.n} per "
        f"held-out genre, seed {args.seed}, greedy, answer_not_found on",
        flush=True,
    )
    records: list[dict] = []
    with open(args.out, "a") if args.out else contextlib.nullcontext() as log:
        for length in (parse_length(x) for x in args.lengths.split(",")):
            chosen = groups(tokenizer, length, args.n, args.seed, not args.no_training)
            for index in range(args.n):  # document i of every group before document i + 1: a cut run stays balanced
                for group, (answerable, unanswerable) in chosen.items():
                    record = run_pair(model, tokenizer, group, answerable[index], unanswerable[index])
                    records.append(record)
                    if log:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    print(f"{length} {group} #{index}: {record['seconds']:.0f}s", file=sys.stderr, flush=True)
    print("\n".join(table(records)))


if __name__ == "__main__":
    main()
