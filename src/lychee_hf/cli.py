"""`lychee-hf`: answer questions over long documents, compress them once, inspect checkpoints and banks.

    lychee-hf ask --context FILE --question "..." [--question "..."] [--model PATH_OR_HUB_ID] [--trace] [--json [OUT]]
    lychee-hf ask --bank BANK_DIR --question "..."
    lychee-hf compress --context FILE --out BANK_DIR [--bank-dtype int8] [--resume | --overwrite]
    lychee-hf compress --corpus DOCS.jsonl --out BANKS_DIR          (any launcher: accelerate launch -m lychee_hf.cli)
    lychee-hf ask --bank BANKS_DIR --questions Q.jsonl --out A.jsonl
    lychee-hf serve --banks BANKS_DIR [--api-keys KEYS_FILE --host 0.0.0.0] [--port 8000]
    lychee-hf info PATH
    lychee-hf bank convert SRC_BANK DST_BANK --bank-dtype int4
    lychee-hf convert SOURCE DESTINATION [--chunk-size N] [--memory-budget N] [--memory-projections lora --rank R]
    lychee-hf eval --task mhqa --lengths 7k,28k --n 16 --method lychee,memagent,full --out DIR
    lychee-hf push FOLDER --repo-id ORG/NAME [--private] [--revision BRANCH] [--commit-message M] [--dry-run]
    lychee-hf train-gate --task niah --length 4k --n 64 --out DIR [--epochs 3] [--teacher gold]
    lychee-hf pretrain-compressor --ratio 4 --out DIR [--continuation-tokens 128] [--max-train-rows N]
    lychee-hf train-rl --task niah,vt --lengths 1k,2k --n 16 --out DIR [--num-generations 4] [--max-steps N]

Errors print one line on stderr and exit with status 2 (set LYCHEE_HF_DEBUG=1 for the traceback).
"""

import argparse
import os
import sys

from .commands import (
    ask,
    bank,
    compress,
    convert,
    evaluate,
    info,
    pretrain_compressor,
    push,
    serve,
    train_gate,
    train_rl,
)
from .commands.arguments import FORMATTER

EXIT_ERROR = 2
# In `lychee-hf --help` order. Each module holds its command's parser (`add_parser`) and body (`run`).
COMMANDS = (ask, compress, serve, info, convert, bank, push, evaluate, train_gate, pretrain_compressor, train_rl)
# Their options are TrainingArguments' fields (HfArgumentParser): their parsers import transformers to build.
TRAINING_COMMANDS = (train_gate, pretrain_compressor, train_rl)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    from . import __version__

    packages = ", ".join(f"{name} {installed(name)}" for name in ("transformers", "peft", "accelerate", "torch"))
    return f"lychee-hf {__version__} ({packages})"


def build_parser(training: bool | str = True) -> argparse.ArgumentParser:
    """The `lychee-hf` parser.

    Args:
        training (`bool` or `str`): which training commands get their options (building those imports
            transformers): all (`True`), none (`False`: they are listed, as in `lychee-hf --help`) or the one named.
    """
    parser = argparse.ArgumentParser(
        prog="lychee-hf",
        description="LycheeMemory: answer questions over documents longer than a model's context, through a\n"
        "compressed memory bank. Without --model, commands use the embedded SmolLM2-135M default.",
        epilog="Errors print one line and exit with status 2 (LYCHEE_HF_DEBUG=1 shows the traceback).\n"
        "LYCHEE_HF_HOME moves the default model's cache. `lychee-hf COMMAND --help` shows examples.",
        formatter_class=FORMATTER,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if command in TRAINING_COMMANDS:
            command.add_parser(commands, full=training is True or training == command.NAME)
        else:
            command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level options take no value, so the first word that is not an option names the command: only its
    # parser is built in full (a training command's imports transformers; `lychee-hf --help` imports nothing).
    named = next((word for word in argv if not word.startswith("-")), False)
    _quiet_bitsandbytes_cpu_note()  # before a training command's parser imports transformers
    args = build_parser(training=named).parse_args(argv)
    succeeded = False
    try:
        status = {command.NAME: command.run for command in COMMANDS}[args.command](args)
        succeeded = True
        return status
    except KeyboardInterrupt:
        print("lychee-hf: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for the user; the traceback on request
        if os.environ.get("LYCHEE_HF_DEBUG"):
            raise
        print(f"lychee-hf: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        _end_distributed(wait=succeeded)


def _end_distributed(wait: bool) -> None:
    """Closes the process group a command under `torchrun` / `accelerate launch` opened (nothing otherwise: a
    command that never imported torch.distributed does not import it now)."""
    if "torch.distributed" in sys.modules:
        from .scale.distributed import end_distributed

        end_distributed(wait=wait)


def _quiet_bitsandbytes_cpu_note() -> None:
    """Drops bitsandbytes' import-time note about an optional CPU kernel package (printed on every command on
    CPUs with AVX512-BF16, quantized or not); every other bitsandbytes message still shows."""
    import logging

    class _DropKernelNote(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropKernelNote())


if __name__ == "__main__":
    sys.exit(main())
