"""What several commands share on the command line: argument types, option groups, the help formatters, and the
options of a training command (the fields of its config dataclasses, as `HfArgumentParser` reads them). Nothing
here imports torch or transformers at module level: building the parser of `lychee-hf --help` stays instant."""

import argparse
import copy
import dataclasses
import re

# Keeps the hand-written line breaks of descriptions and EXAMPLES epilogs.
FORMATTER = argparse.RawDescriptionHelpFormatter


class TrainingFormatter(argparse.RawDescriptionHelpFormatter):
    """Training commands: EXAMPLES kept as written, each option under its one name (the first of its spellings, and
    its `--no-` form for an on/off option; the others are hidden aliases), and each option's default printed from
    where it is set (the dataclass field, or the parser's own default) instead of repeated in the help text.
    Options without a default (None, an unset flag) and help texts that speak of their default already are left
    as they are."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or unset or "default" in help.lower():
            return help
        return help + " (default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or not action.option_strings[0].startswith("--"):  # `-h, --help`
            return super()._format_action_invocation(action)
        shown = copy.copy(action)
        shown.option_strings = action.option_strings[: 2 if isinstance(action, argparse.BooleanOptionalAction) else 1]
        return super()._format_action_invocation(shown)


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


# Units of a size on the command line (`--max-bank-memory 2GB`): decimal and binary, any case.
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def byte_size(text: str) -> int:
    """A size with its unit (`512MB`, `2GB`, `1.5GiB`; `0` alone) as bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text.strip())
    unit = match.group(2).upper() if match else None
    if match is None or not (unit in SIZE_UNITS or (unit == "" and float(match.group(1)) == 0)):
        raise argparse.ArgumentTypeError(
            f"must be a size with its unit, such as 512MB, 2GB or 1.5GiB (or 0), got {text}"
        )
    return int(float(match.group(1)) * SIZE_UNITS.get(unit, 1))


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def add_command(commands, name: str, help: str, examples: str, description: str | None = None, **kwargs):
    """A subcommand parser with its help, description and EXAMPLES epilog (`kwargs`: `parser_class` and its own)."""
    kwargs.setdefault("formatter_class", FORMATTER)
    return commands.add_parser(name, help=help, description=description or help, epilog=examples, **kwargs)


# The `TrainingArguments` options a training command's `--help` lists, under TRAINER_HEADING; every other field is
# accepted too (`--field-name VALUE`), unlisted, and the heading points to transformers' documentation of them.
TRAINER_OPTIONS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "bf16",
    "activation_checkpointing",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
)
TRAINER_HEADING = "Trainer options (transformers.TrainingArguments)"
TRAINER_DESCRIPTION = """\
The ones that matter most here. Every other field is accepted too, as an
option named after it (e.g. --optim, --report-to, --torch-compile); see
https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"""
# `TrainingArguments` fields that are no options of a training command, because an option of its own says the same:
# the Trainer writes into OUT/trainer, `--resume` finds the checkpoint there, `--quiet` hides the progress bars.
SET_BY_COMMAND = {"output_dir": "--out", "resume_from_checkpoint": "--resume", "disable_tqdm": "--quiet"}
# Deprecated `TrainingArguments` names: hidden spellings of the option of the new name.
RENAMED_FIELDS = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def add_training_command(
    commands, name: str, help: str, examples: str, dataclass_types: list | None, names: dict[str, str] | None = None
):
    """A training command's parser, whose options include the fields of `dataclass_types` as transformers'
    `HfArgumentParser` reads them (type, default, `help` and `aliases` metadata), as TRL's CLI builds its training
    commands: each default and help text lives once, in the field (see `add_dataclass_options`).

    `dataclass_types=None` gives the command without its options (its line in `lychee-hf --help`), importing
    nothing: transformers is imported only to build the options of the command being run.

    Args:
        names (`dict[str, str]`, *optional*): the name a field's option is shown under in this command (e.g.
            `{"lora_r": "--compressor-lora-r"}`); its other spellings stay accepted.
    """
    if dataclass_types is None:
        return add_command(commands, name, help, examples)
    parser = add_command(commands, name, help, examples, formatter_class=TrainingFormatter)
    add_dataclass_options(parser, dataclass_types, names or {})
    return parser


def add_dataclass_options(parser: argparse.ArgumentParser, dataclass_types: list, names: dict[str, str]) -> None:
    """The fields of `dataclass_types` as options: one group per dataclass for its own fields, then one group,
    TRAINER_HEADING, for the `TrainingArguments` fields, all listed after the command's own options.

    Each option has one name, shown in `--help`: `names[field]`, else its first `aliases` metadata (`--epochs`),
    else `--field-name`; `--field_name` and the deprecated names of RENAMED_FIELDS are hidden aliases. A boolean
    field is one on/off option (`--bf16` / `--no-bf16`, argparse's `BooleanOptionalAction`) instead of
    `HfArgumentParser`'s `--bf16 [BF16]` and `--no_bf16` pair. Of the `TrainingArguments` fields, those in
    TRAINER_OPTIONS are listed (in that order) and the others hidden; those in SET_BY_COMMAND are left out.
    """
    from transformers import HfArgumentParser, TrainingArguments
    from transformers.hf_argparser import string_to_bool

    actions = {}  # field name -> its action: the first one of that dest (a `--no_x` complement comes after)
    for action in HfArgumentParser(dataclass_types, add_help=False)._actions:
        actions.setdefault(action.dest, action)
    hidden_names = {new: actions.pop(old).option_strings for old, new in RENAMED_FIELDS.items() if old in actions}
    groups = {dtype: parser.add_argument_group(f"{dtype.__name__} options") for dtype in dataclass_types}
    trainer = parser.add_argument_group(TRAINER_HEADING, TRAINER_DESCRIPTION)
    owners = {field.name: dtype for dtype in reversed(dataclass_types) for field in dataclasses.fields(dtype)}
    listed = {name: place for place, name in enumerate(TRAINER_OPTIONS)}
    for name in sorted(actions, key=lambda name: listed.get(name, len(listed))):
        if name in SET_BY_COMMAND:
            continue
        action, is_trainer_field = actions[name], name in TrainingArguments.__dataclass_fields__
        spellings = (f"--{name}", f"--{name.replace('_', '-')}")
        aliases = [string for string in action.option_strings if string not in spellings]
        shown = names.get(name) or (aliases or [spellings[1]])[0]
        strings = list(dict.fromkeys([shown, *action.option_strings, *hidden_names.get(name, [])]))
        group = trainer if is_trainer_field else groups[owners[name]]
        if action.type is string_to_bool:
            option = group.add_argument(
                *strings, action=argparse.BooleanOptionalAction, dest=name, default=action.default
            )
        else:
            keys = ("type", "default", "choices", "nargs", "const", "required", "metavar")
            option = group.add_argument(*strings, dest=name, **{key: getattr(action, key) for key in keys})
            if option.choices is not None and len(option.choices) > 6:  # named in the help text, listed on error
                option.metavar = name.upper()
        option.help = argparse.SUPPRESS if is_trainer_field and name not in listed else action.help


def add_training_options(parser: argparse.ArgumentParser, memory_budget: bool = True) -> None:
    """What every training command takes after its own options: the model, its block settings (and memory budget),
    `--resume` with checkpoints on by default, so that every run can be resumed, and `--max-minutes`. Called last:
    the usage line names the required options, then `[options]`."""
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
    required = [
        f"{action.option_strings[0]} {action.metavar or action.dest.upper()}"
        for action in parser._actions
        if action.required
    ]
    parser.usage = " ".join(["%(prog)s", *required, "[options]"])


def training_config(args: argparse.Namespace, config_class, out, **overrides):
    """The command's training config from its parsed options: the Trainer writes into `OUT/trainer`, `--quiet`
    hides its bars, and held-out batches follow `--batch-size` unless given (as with the CLI's single batch size
    before)."""
    values = dict(
        output_dir=str(out / "trainer"),
        per_device_eval_batch_size=args.per_device_eval_batch_size or args.per_device_train_batch_size,
    )
    if args.quiet:
        values["disable_tqdm"] = True
    return dataclass_from(args, config_class, **{**values, **overrides})


def cli_help(parser: argparse.ArgumentParser, dest: str, help: str) -> None:
    """Another help text for a dataclass option whose value the command uses for more than the field does (e.g. a
    seed that also draws the examples)."""
    for action in parser._actions:
        if action.dest == dest and not action.option_strings[0].startswith("--no"):
            action.help = help


def dataclass_from(args: argparse.Namespace, dataclass_type, **overrides):
    """An instance of `dataclass_type` from the parsed options named after its fields (and `overrides`); a field
    that is no option of the command keeps its default."""
    fields = [field.name for field in dataclasses.fields(dataclass_type) if field.init and hasattr(args, field.name)]
    return dataclass_type(**{**{name: getattr(args, name) for name in fields}, **overrides})


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


def add_first_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """`--first-stage` and `--candidates`: which blocks the gate scores (default: the checkpoint's setting)."""
    stage = parser.add_argument_group("first stage (default: the checkpoint's)")
    stage.add_argument(
        "--first-stage",
        choices=("full_scan", "lexical"),
        help="full_scan: the gate scores every block (cost grows with the document); lexical: only the blocks a "
        "BM25 index over the bank's text ranks best for the question (and for each new memory), plus a few spread "
        "over the document: the cost stays flat (banks compressed from text; others take the full scan)",
    )
    stage.add_argument("--candidates", type=positive_int, help="blocks the lexical index names per question")


# `lychee_hf.data.TASKS` by name, written out so that `--help` imports nothing (a test keeps them equal).
GENERATED_TASKS = (
    "mhqa, niah, vt, facts, facts-rephrased, facts-heldout, facts-heldout-unanswerable, twohop, twohop-heldout, "
    "genres, genres-heldout, genres-heldout-unanswerable, genres-heldout:contract, genres-heldout:report, "
    "genres-heldout:faq"
)

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
    from ..training.trainer_utils import TimeLimitCallback

    return [TimeLimitCallback(args.max_minutes)]
