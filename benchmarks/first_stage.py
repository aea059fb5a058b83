"""The first stage (a lexical index names the blocks the gate scores) against the full scan.

    python benchmarks/first_stage.py recall --lengths 8k,32k,128k,1m --n 24   # the index alone, no model
    python benchmarks/first_stage.py answers --lengths 8k,32k --n 8            # embedded default: both policies
    python benchmarks/first_stage.py cost --lengths 32k,128k,1m                # seconds per question, flat?

`recall`: held-out single facts and two-hop chains (`facts-heldout`, `twohop-heldout`), cut into the default's
256-token blocks with its tokenizer; candidate recall is the fraction of examples whose gold blocks are all among
the first stage's candidates (`first_stage_candidates` best for the question, plus the even sample). For two-hop
chains the second fact's block usually shares no rare word with the question: the index is asked again with the
working memory, and here the first fact's own sentence stands in for a memory that holds it: over the blocks
after the first fact (what the scan asks) and over the whole document (the second look, `gate_revisit`). "Scan
misses before the first fact" counts the chains the scan missed whose missing blocks all come before the first fact:
no reading in document order can know they matter until the first fact is read.

`answers`: the embedded default answers each example from one bank, with the full scan and with the index; sub-EM,
candidate and gate recall of the gold blocks, and seconds per question (from the bank). With `--memagent`, the
MemAgent loop answers the first example at the longest length, for the ratio the issue's target names.

`cost`: seconds per question from a prebuilt bank as the document grows, full scan against the index, on a model
whose memory updates and answers decode a fixed number of tokens (`--model tiny`: random weights, 256-token
blocks; `--model default`: the embedded default). Each bank is asked `--questions` + 1 times: the first question is
shown apart (after a large compression it also pays for collecting that compression's garbage), the median of the
others is the per-question cost. Ratios against the shortest length in the same run.
"""

import argparse
import dataclasses
import os
import platform
import re
import statistics
import time

import torch
import transformers
from transformers import AutoTokenizer, GenerationConfig

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, parse_length, supporting_chunks
from lychee_hf.metrics import substring_match
from lychee_hf.modeling.bank_text_lychee import chunk_char_spans
from lychee_hf.modeling.first_stage_lychee import NOT_A_CANDIDATE, Candidates, LexicalIndex, lexical_index
from lychee_hf.text_banks import compress_text

TASK_NAMES = ("facts-heldout", "twohop-heldout")


def interval(hits: float, n: int) -> str:
    """The rate and its 95% normal-approximation half-width."""
    rate = hits / n if n else 0.0
    return f"{rate:.3f} ± {1.96 * (rate * (1 - rate) / n) ** 0.5:.3f}" if n else "-"


def environment(extra: str) -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; {extra}"
    )


def load_default(path: str | None):
    if path is None:
        from lychee_hf.default_model import ensure_default_model

        path = str(ensure_default_model(verbose=False))
    return LycheeMemoryForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


# ------------------------------------------------------------------------------------------------ recall
def block_texts(tokenizer, text: str, chunk_size: int) -> list[str]:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text[start:end] for start, end in chunk_char_spans(offsets, chunk_size)]


def first_hop(example) -> tuple[int, int]:
    """The supporting span that names the question's entity (a two-hop chain's first fact; a fact's own span)."""
    words = set(re.findall(r"[A-Z][a-z]+", example.question))
    return max(
        example.supporting, key=lambda span: len(words & set(re.findall(r"[A-Z][a-z]+", example.context[slice(*span)])))
    )


def recall_row(tokenizer, task: str, length: int, n: int, k: int, sample: int, chunk_size: int) -> dict:
    hits = {"question": 0, "ahead": 0, "anywhere": 0, "behind": 0}
    seconds = []
    for example in TASKS[task](tokenizer, length, n, seed=0):
        texts = block_texts(tokenizer, example.context, chunk_size)
        started = time.perf_counter()
        index = LexicalIndex(texts)
        seconds.append(time.perf_counter() - started)
        candidates = Candidates.for_question(index, example.question, len(texts), k, sample)
        gold = set(supporting_chunks(example, tokenizer, chunk_size))
        hits["question"] += gold <= set(candidates.chosen_by)
        # A memory that holds the first fact, written when the scan read its block (its first gold block).
        hop = first_hop(example)
        memory = example.context[slice(*hop)]
        hop_block = min(supporting_chunks(dataclasses.replace(example, supporting=[hop]), tokenizer, chunk_size))
        candidates.add_for_memory(memory, hop_block, k)
        missing = gold - set(candidates.chosen_by)
        hits["ahead"] += not missing
        # a miss whose blocks all lie before the first fact: no reading in document order can know of them yet
        hits["behind"] += bool(missing) and max(missing) < hop_block
        candidates.add_for_memory(memory, -1, k)
        hits["anywhere"] += gold <= set(candidates.chosen_by)
    return {"blocks": len(texts), "build_s": statistics.mean(seconds), **hits}


def run_recall(args) -> None:
    tokenizer = AutoTokenizer.from_pretrained(args.model) if args.model else load_default(None)[1]
    print(environment(f"n={args.n} per task and length, {args.candidates} candidates + {args.sample} sampled"))
    print("| task | length | blocks | candidate recall: question | + memory, blocks ahead (scan) | "
          "scan misses before the first fact | + memory, whole document (second look) | index build s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for length in (parse_length(x) for x in args.lengths.split(",")):
        for task in TASK_NAMES:
            row = recall_row(tokenizer, task, length, args.n, args.candidates, args.sample, args.chunk_size)
            print(
                f"| {task} | {length // 1000}K | {row['blocks']} | {interval(row['question'], args.n)} | "
                f"{interval(row['ahead'], args.n)} | {row['behind']} of {args.n - row['ahead']} | "
                f"{interval(row['anywhere'], args.n)} | {row['build_s']:.3f} |",
                flush=True,
            )


# ----------------------------------------------------------------------------------------------- answers
def ask(model, tokenizer, bank, question: str, first_stage: str):
    ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
    started = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        bank=bank,
        return_dict_in_generate=True,
        do_sample=False,
        tokenizer=tokenizer,
        first_stage=first_stage,
        show_progress=False,
    )
    return out.trace[0], time.perf_counter() - started


def run_answers(args) -> None:
    model, tokenizer = load_default(args.model)
    config = model.config
    print(environment(f"embedded default, n={args.n}, {config.first_stage_candidates} candidates + "
                      f"{config.first_stage_sample} sampled, greedy"))  # fmt: skip
    print("| task | length | policy | sub-EM | gold blocks among candidates | gold blocks read | s per question |")
    print("|---|---|---|---|---|---|---|")
    memagent_example = None
    for length in (parse_length(x) for x in args.lengths.split(",")):
        for task in TASK_NAMES:
            stats = {policy: {"em": 0, "cand": 0, "read": 0, "s": []} for policy in ("full_scan", "lexical")}
            examples = TASKS[task](tokenizer, length, args.n, seed=0)
            memagent_example = examples[0]
            for example in examples:
                bank = compress_text(model, tokenizer, example.context, show_progress=False)
                gold = set(supporting_chunks(example, tokenizer, config.chunk_size))
                for policy, s in stats.items():
                    trace, seconds = ask(model, tokenizer, bank, example.question, policy)
                    answer = tokenizer.decode(trace.answer_ids, skip_special_tokens=True)
                    s["em"] += substring_match(answer, example.answers)
                    s["cand"] += gold <= {r.block_index for r in trace if r.gate_decision != NOT_A_CANDIDATE}
                    s["read"] += gold <= {r.block_index for r in trace if r.kept}
                    s["s"].append(seconds)
            for policy, s in stats.items():
                print(
                    f"| {task} | {length // 1000}K | {policy} | {interval(s['em'], args.n)} | "
                    f"{interval(s['cand'], args.n)} | {interval(s['read'], args.n)} | {statistics.mean(s['s']):.2f} |",
                    flush=True,
                )
    if args.memagent and memagent_example is not None:
        from lychee_hf.eval.baselines import run_method

        started = time.perf_counter()
        run_method("memagent", model, tokenizer, memagent_example)
        print(f"\nMemAgent loop, one {task} question at the longest length: {time.perf_counter() - started:.2f} s")


# -------------------------------------------------------------------------------------------------- cost
def fixed(tokens: int) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def load_cost_model(args):
    if args.model != "tiny":
        return load_default(None if args.model == "default" else args.model)
    from lychee_hf.testing import tiny_backbone, tiny_tokenizer

    backbone = tiny_backbone("llama")
    backbone.config.max_position_embeddings = 8192
    tokenizer = tiny_tokenizer()
    model = LycheeMemoryForCausalLM.from_backbone(
        backbone,
        tokenizer,
        chunk_size=256,
        compression_mode="lossless",
        memory_budget=32,
        gate_type="query_likelihood",
        gate_reads_memory=True,
        compress_batch_size=8,
    )
    return model.eval(), tokenizer


def run_cost(args) -> None:
    model, tokenizer = load_cost_model(args)
    print(environment(f"model {args.model}, memory updates {args.update_tokens} tokens, answers "
                      f"{args.answer_tokens} tokens, {args.questions} questions per bank, gate "
                      f"{model.config.gate_type}"))  # fmt: skip
    print(
        "| length | blocks | compress s | index build s | full scan s/question | index s/question | "
        "index, first question s | full / index |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for length in (parse_length(x) for x in args.lengths.split(",")):
        example = TASKS["facts-heldout"](tokenizer, length, 1, seed=1)[0]
        started = time.perf_counter()
        bank = compress_text(model, tokenizer, example.context, show_progress=False)
        compress = time.perf_counter() - started
        started = time.perf_counter()
        lexical_index(bank)  # built once per bank, with it (a saved corpus keeps it; a bank rebuilds it when loaded)
        index_build = time.perf_counter() - started
        ids = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)])
        per_policy, first = {}, {}
        for policy in ("full_scan", "lexical") if length <= args.full_scan_up_to else ("lexical",):
            seconds = []
            for _ in range(args.questions + 1):
                started = time.perf_counter()
                model.generate(
                    input_ids=ids,
                    bank=bank,
                    generation_config=fixed(args.answer_tokens),
                    memory_generation_config=fixed(args.update_tokens),
                    tokenizer=tokenizer,
                    first_stage=policy,
                    show_progress=False,
                )
                seconds.append(time.perf_counter() - started)
            # the first question after a large compression also pays Python's collection of the garbage that
            # compression left (a one-time cost per bank): shown apart, the median of the rest is the per-question cost
            first[policy], per_policy[policy] = seconds[0], statistics.median(seconds[1:])
        full = per_policy.get("full_scan")
        rows.append((length, per_policy["lexical"], full))
        ratio = f"{full / per_policy['lexical']:.1f}x" if full else "-"
        full_cell = f"{full:.2f}" if full else "-"
        print(
            f"| {length // 1000}K | {len(bank)} | {compress:.1f} | {index_build:.2f} | {full_cell} | "
            f"{per_policy['lexical']:.2f} | {first['lexical']:.2f} | "
            f"{ratio} |",
            flush=True,
        )
        del bank
    base_length, base, base_full = rows[0]
    print(f"\n| length | index s/question vs {base_length // 1000}K | full scan vs {base_length // 1000}K |")
    print("|---|---|---|")
    for length, lexical, full in rows:
        full_ratio = f"{full / base_full:.2f}x" if full and base_full else "-"
        print(f"| {length // 1000}K | {lexical / base:.2f}x | {full_ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["recall", "answers", "cost"])
    parser.add_argument("--model", help="recall/answers: a checkpoint (default: the embedded default); cost: tiny, "
                        "default or a path")  # fmt: skip
    parser.add_argument("--lengths", default="8k,32k")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--candidates", type=int, default=8, help="recall: first_stage_candidates")
    parser.add_argument("--sample", type=int, default=4, help="recall: first_stage_sample")
    parser.add_argument("--chunk-size", type=int, default=256, help="recall: tokens per block")
    parser.add_argument("--memagent", action="store_true", help="answers: time the MemAgent loop once")
    parser.add_argument("--questions", type=int, default=3, help="cost: questions per bank after the first")
    parser.add_argument("--update-tokens", type=int, default=16)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--full-scan-up-to", type=parse_length, default=parse_length("128k"),
                        help="cost: lengths above this time the index only")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.what == "cost" and args.model is None:
        args.model = "tiny"
    {"recall": run_recall, "answers": run_answers, "cost": run_cost}[args.what](args)


if __name__ == "__main__":
    main()
