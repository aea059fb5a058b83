"""`lychee-hf bank ...`: memory-bank tools (convert a bank to another storage format)."""

import argparse
import math

from .arguments import FORMATTER, add_bank_dtype_argument, add_command

NAME = "bank"
EXAMPLES = """examples:
  lychee-hf bank convert bank/ bank-int8/ --bank-dtype int8
  lychee-hf bank convert old-v1-bank/ bank-v2/                # same format, sharded version 2"""


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(commands, NAME, "memory-bank tools: convert a bank to another storage format", EXAMPLES)
    add_bank_commands(parser)
    return parser


def add_bank_commands(parser: argparse.ArgumentParser) -> None:
    """`lychee-hf bank ...` subcommands."""
    tools = parser.add_subparsers(dest="bank_command", required=True, metavar="TOOL", help="convert")
    convert = tools.add_parser(
        "convert",
        help="rewrite a bank in another storage format (or v1 -> sharded v2)",
        description="Rewrite a bank in another storage format (or a version-1 bank as sharded version 2).",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    convert.add_argument("source", help="a bank folder")
    convert.add_argument("destination", help="new folder for the converted bank")
    add_bank_dtype_argument(convert, default_help="the source's format")
    convert.add_argument("--max-shard-size", type=mebibytes, default=512, help="shard size in MiB (default 512)")


def mebibytes(text: str) -> float:
    """A size in MiB: a positive finite number (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    return {"convert": run_bank_convert}[args.bank_command](args)


def run_bank_convert(args: argparse.Namespace) -> int:
    from ..bank_tools import bank_line, convert_bank

    max_shard_bytes = max(1, int(args.max_shard_size * 2**20))  # a size under one byte: one block per shard
    bank = convert_bank(args.source, args.destination, args.bank_dtype, max_shard_bytes)
    print(bank_line(args.destination, bank))
    return 0
