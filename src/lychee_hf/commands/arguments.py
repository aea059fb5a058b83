"""What several commands share on the command line: argument types, option groups, the help formatters, and the
parser of a training command (an `HfArgumentParser` over its config dataclasses). Nothing here imports torch or
transformers at module level: building the parser of `lychee-hf --help` stays instant."""

import argparse
import dataclasses

# Keeps the hand-written line breaks of descriptions and EXAMPLES epilogs.
FORMATTER = argparse.RawDescriptionHelpFormatter


class TrainingFormatter(argparse.RawDescriptionHelpFormatter):
    """Training commands: EXAMPLES kept as written, and each option's default printed from where it is set (the
    dataclass field, or the parser's own default) instead of repeated in the help text. Options without a default
    (None, an unset flag) and help texts that speak of their default already are left as they are."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or unset or "default" in help.lower():
            return help
        return help + " (default: %(default)s)"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def add_command(commands, name: str, help: str, examples: str, description: str | None = None, **kwargs):
    """A subcommand parser with its help, description and EXAMPLES epilog (`kwargs`: `parser_class` and its own)."""
    kwargs.setdefault("formatter_class", FORMATTER)
    return commands.add_parser(name, help=help, description=description or help, epilog=examples, **kwargs)


def add_training_command(commands, name: str, help: str, examples: str, dataclass_types: list | None):
    """A training command's parser, whose options are the fields of `dataclass_types` as transformers'
    `HfArgumentParser` spells them (`--field_name` and `--field-name`, the field's default, its `help` and `aliases`
    metadata), as TRL's CLI builds its training commands: each default and help text lives once, in the field.

    The `HfArgumentParser` is the subparser's parent (argparse's `parents=`) rather than its class, so that the other
    commands, and `lychee-hf --help`, never import transformers. `dataclass_types=None` gives the command without
    its options (its line in `lychee-hf --help`), importing nothing.
    """
    if dataclass_types is None:
        return add_command(commands, name, help, examples)
    from transformers import HfArgumentParser

    fields = HfArgumentParser(dataclass_types, add_help=False)
    return add_command(commands, name, help, examples, parents=[fields], formatter_class=TrainingFormatter)


def add_training_options(parser: argparse.ArgumentParser, memory_budget: bool = True) -> None:
    """What every training command takes after its own options: the model, its block settings (and memory budget),
    `--resume` with checkpoints on by default, so that every run can be resumed, and `--max-minutes`."""
    add_model_arguments(parser)
    add_block_arguments(parser)
    if memory_budget:
        add_memory_budget_argument(parser)
    # Held-out batches follow --batch-size unless given, as with the CLI's single batch size before.
    parser.set_defaults(per_device_eval_batch_size=None)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint (same result as one uninterrupted run)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="stop cleanly after this much wall time, with a checkpoint there that --resume continues from",
    )
    # Resumable by default: a checkpoint every 50 steps in OUT/trainer, only the last one kept (a 135M model's is
    # about 0.5 GB with its optimizer state).
    parser.set_defaults(save_strategy="steps", save_steps=50, save_total_limit=1)


def training_config(args: argparse.Namespace, config_class, out, **overrides):
    """The command's training config from its parsed options: the Trainer writes into `OUT/trainer` unless
    `--output_dir` says otherwise, `--quiet` hides its bars, and held-out batches follow `--batch-size` unless
    given (as with the CLI's single batch size before)."""
    values = dict(
        output_dir=args.output_dir or str(out / "trainer"),
        per_device_eval_batch_size=args.per_device_eval_batch_size or args.per_device_train_batch_size,
        disable_tqdm=True if args.quiet else args.disable_tqdm,
    )
    return dataclass_from(args, config_class, **{**values, **overrides})


def cli_help(parser: argparse.ArgumentParser, dest: str, help: str) -> None:
    """Another help text for a dataclass option whose value the command uses for more than the field does (e.g. a
    seed that also draws the examples)."""
    for action in parser._actions:
        if action.dest == dest and not action.option_strings[0].startswith("--no"):
            action.help = help


def dataclass_from(args: argparse.Namespace, dataclass_type, **overrides):
    """An instance of `dataclass_type` from the parsed options named after its fields (and `overrides`)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(dataclass_type) if field.init}
    return dataclass_type(**{**values, **overrides})


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model runs the command, in which dtype, and how chatty it is."""
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: the embedded SmolLM2-135M model)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: the checkpoint's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or build messages")


def show_progress(args: argparse.Namespace) -> bool | None:
    """`show_progress` of compress / generate: `--quiet` turns bars off; otherwise the model decides (8+ chunks)."""
    return False if args.quiet else None


def add_document_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--field", default="context", help="JSONL field holding the document (default: context)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the context file (default: utf-8)")


def add_block_arguments(parser: argparse.ArgumentParser) -> None:
    """How documents become blocks (overrides the checkpoint's settings)."""
    parser.add_argument(
        "--ratio", type=non_negative_int, help="compress with memory tokens at this ratio (0: lossless blocks)"
    )
    parser.add_argument("--chunk-size", type=positive_int, help="source tokens per block")


def add_memory_budget_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-budget", type=positive_int, help="max working-memory tokens")


def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=positive_int, help="max answer tokens (default: the checkpoint's)")


# `lychee_hf.data.TASKS` by name, written out so that `--help` imports nothing (a test keeps them equal).
GENERATED_TASKS = "mhqa, niah, vt, facts, facts-rephrased, facts-heldout, twohop, twohop-heldout"

# The storage formats of `modeling/kv_quant_lychee.py` (a test keeps them equal), spelled here so that building the
# parser imports no torch: `lychee-hf --help` stays instant.
BANK_DTYPES = ("float32", "float16", "bfloat16", "int8", "int4")


def add_bank_dtype_argument(parser: argparse.ArgumentParser, default_help: str = "float16 for float32 models") -> None:
    parser.add_argument(
        "--bank-dtype",
        choices=BANK_DTYPES,
        help=f"storage format of the blocks (int8/int4: quantized K/V; default: {default_help}, else the model's)",
    )


def time_limit(args: argparse.Namespace) -> list | None:
    """The trainer callbacks `--max-minutes` asks for (`None` without it)."""
    if not args.max_minutes:
        return None
    from ..training.data import TimeLimitCallback

    return [TimeLimitCallback(args.max_minutes)]
