"""`lychee-hf eval`: evaluate methods on generated tasks or your data."""

import argparse

from .arguments import (
    GENERATED_TASKS,
    add_answer_arguments,
    add_bank_dtype_argument,
    add_block_arguments,
    add_command,
    add_memory_budget_argument,
    add_model_arguments,
    positive_int,
)

NAME = "eval"
EXAMPLES = """examples:
  lychee-hf eval --task mhqa --lengths 7k,14k --n 16 --method lychee,memagent,full --out eval-mhqa/
  lychee-hf eval --task jsonl --data my.jsonl --method lychee,lychee-nogate --out eval-mine/"""


def add_parser(commands) -> argparse.ArgumentParser:
    from ..eval.settings import default

    lengths = ",".join(f"{length // 1000}k" if length % 1000 == 0 else str(length) for length in default("lengths"))
    parser = add_command(commands, NAME, "evaluate methods on generated tasks or your data", EXAMPLES)
    parser.add_argument("--task", required=True, help=f"{GENERATED_TASKS} (generated) or jsonl, hotpotqa (--data)")
    parser.add_argument("--lengths", default=lengths, help="comma-separated context lengths, e.g. 7k,28k,112k")
    parser.add_argument(
        "--n", type=positive_int, default=default("n"), help=f"examples per length (default {default('n')})"
    )
    parser.add_argument(
        "--method",
        default=",".join(default("methods")),
        help="comma-separated: lychee, lychee-lossless, lychee-compressed, lychee-gate, lychee-nogate, lychee-index "
        "(the first stage's index before the gate), memagent, full",
    )
    parser.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--data", help="JSONL (MemAgent schema) or HotpotQA JSON for --task jsonl / hotpotqa")
    seed, chunk = default("seed"), default("memagent_chunk_tokens")
    parser.add_argument("--seed", type=int, default=seed, help=f"generator seed (default {seed}: the held-out seed)")
    parser.add_argument(
        "--memagent-chunk", type=positive_int, default=chunk, help=f"raw tokens per MemAgent chunk (default {chunk})"
    )
    add_bank_dtype_argument(parser, default_help="exact blocks as computed")
    add_model_arguments(parser)
    add_block_arguments(parser)
    add_memory_budget_argument(parser)
    add_answer_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data import parse_length
    from ..eval.runner import run_eval
    from ..eval.settings import EvalSettings
    from ..scale.distributed import distributed_state
    from .loading import load_model

    settings = EvalSettings(
        task=args.task,
        lengths=[parse_length(text) for text in args.lengths.split(",")],
        n=args.n,
        methods=[m.strip() for m in args.method.split(",")],
        seed=args.seed,
        data=args.data,
        max_new_tokens=args.max_new_tokens,
        memagent_chunk_tokens=args.memagent_chunk,
        bank_dtype=args.bank_dtype,
    )
    state = distributed_state()  # under accelerate launch / torchrun, processes share the examples
    model, tokenizer = load_model(args, state)
    summary = run_eval(model, tokenizer, settings, args.out, not args.quiet, state)
    if state.is_main_process:
        print(summary.read_text())
    return 0
