"""`lychee-hf convert`: convert an authors'-format (or stock) checkpoint to lychee-hf."""

import argparse

from .arguments import add_command

NAME = "convert"
EXAMPLES = """examples:
  lychee-hf convert lerverson/LycheeMemory-7B ./LycheeMemory-7B-hf
  lychee-hf convert SRC DST --memory-projections lora --rank 64"""


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(commands, NAME, "convert an authors'-format (or stock) checkpoint to lychee-hf", EXAMPLES)
    add_convert_arguments(parser)
    return parser


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `lychee-hf convert` (shared with conversion/convert_reference_checkpoint.py)."""
    parser.add_argument("source", help="folder or Hub id in the authors' format (or a stock Qwen2/Llama checkpoint)")
    parser.add_argument("destination", help="new folder for the lychee-hf checkpoint")
    parser.add_argument("--chunk-size", type=int, help="source tokens per block (default: 2 x the window)")
    parser.add_argument("--memory-budget", type=int, help="working-memory tokens (default 1024)")
    parser.add_argument("--max-shard-size", type=float, default=2.0, help="output shard size in GiB (default 2)")
    parser.add_argument(
        "--memory-projections",
        choices=["full", "lora"],
        default="full",
        help="memory q/k/v as exact full matrices (default) or backbone + low-rank delta",
    )
    parser.add_argument("--rank", type=int, default=64, help="rank of the delta with --memory-projections lora")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max relative reconstruction error (lora)")
    parser.add_argument("--force", action="store_true", help="convert even above --tolerance (errors reported)")


def run(args: argparse.Namespace) -> int:
    from ..convert_reference import convert_reference_checkpoint

    knobs = {}
    if args.chunk_size:
        knobs["chunk_size"] = args.chunk_size
    if args.memory_budget:
        knobs["memory_budget"] = args.memory_budget
    report = convert_reference_checkpoint(
        args.source,
        args.destination,
        max_shard_bytes=int(args.max_shard_size * 2**30),
        memory_rank=args.rank if args.memory_projections == "lora" else None,
        tolerance=args.tolerance,
        force=args.force,
        **knobs,
    )
    print(report.summary())
    print(f"wrote {args.destination}")
    return 0
