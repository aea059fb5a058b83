"""`lychee-hf`: answer questions over long documents, compress them once, inspect checkpoints and banks.

    lychee-hf ask --context FILE --question "..." [--question "..."] [--model PATH_OR_HUB_ID] [--trace] [--json [OUT]]
    lychee-hf ask --memory BANK_DIR --question "..."
    lychee-hf compress --context FILE --out BANK_DIR [--bank-dtype int8] [--resume | --overwrite]
    lychee-hf compress --corpus DOCS.jsonl --out BANKS_DIR          (any launcher: accelerate launch -m lychee_hf.cli)
    lychee-hf ask --memory BANKS_DIR --questions Q.jsonl --out A.jsonl
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
import json
import os
import sys
import time
from pathlib import Path

EXIT_ERROR = 2
FORMATTER = argparse.RawDescriptionHelpFormatter

EXAMPLES = {
    "ask": """examples:
  lychee-hf ask --context examples/harbor_town.txt --question "Who founded the Saltmarsh bakery?" --trace
  lychee-hf ask --memory bank/ --question "Who founded the bakery?" --question "When was the bridge built?"
  lychee-hf ask --context docs.jsonl --field text --question "..." --json answers.json
  lychee-hf ask --context long.txt --question "..." --gate-threshold 0.3 --gate-max-blocks 4
  lychee-hf ask --memory banks/ --questions q.jsonl --out answers.jsonl   # {"document": ID, "question": ...} lines
  accelerate launch -m lychee_hf.cli ask --memory banks/ --questions q.jsonl --out answers.jsonl   # all GPUs""",
    "compress": """examples:
  lychee-hf compress --context examples/harbor_town.txt --out bank/
  lychee-hf compress --context docs.jsonl --out banks/          # one numbered bank per line
  lychee-hf compress --context long.txt --out bank/ --ratio 4   # memory tokens instead of lossless blocks
  lychee-hf compress --corpus docs.jsonl --out banks/            # one bank per document + corpus.json; resumable
  accelerate launch -m lychee_hf.cli compress --corpus docs.jsonl --out banks/   # documents split over GPUs""",
    "info": """examples:
  lychee-hf info bank/
  lychee-hf info ./LycheeMemory-7B-hf""",
    "convert": """examples:
  lychee-hf convert lerverson/LycheeMemory-7B ./LycheeMemory-7B-hf
  lychee-hf convert SRC DST --memory-projections lora --rank 64""",
    "bank": """examples:
  lychee-hf bank convert bank/ bank-int8/ --bank-dtype int8
  lychee-hf bank convert old-v1-bank/ bank-v2/                # same format, sharded version 2""",
    "push": """examples:
  lychee-hf push ./LycheeMemory-7B-hf --repo-id me/LycheeMemory-7B-hf --private --dry-run
  lychee-hf push bank/ --repo-id me/my-document-bank""",
    "eval": """examples:
  lychee-hf eval --task mhqa --lengths 7k,14k --n 16 --method lychee,memagent,full --out eval-mhqa/
  lychee-hf eval --task jsonl --data my.jsonl --method lychee,lychee-nogate --out eval-mine/""",
    "train-gate": """examples:
  lychee-hf train-gate --task niah --length 4k --n 64 --out gated/
  lychee-hf train-gate --task jsonl --data rows.jsonl --out gated/""",
    "pretrain-compressor": """examples:
  lychee-hf pretrain-compressor --ratio 4 --out pretrained/ --max-train-rows 512
  lychee-hf pretrain-compressor --ratio 4 --text corpus.txt --out pretrained/""",
    "train-rl": """examples:
  lychee-hf train-rl --model pretrained/ --task niah,mhqa --lengths 1k,2k,4k --n 64 --out trained/
  lychee-hf train-rl --data rows.jsonl --out trained/ --max-minutes 60""",
}


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


def build_parser() -> argparse.ArgumentParser:
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

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=description or help, epilog=EXAMPLES[name], formatter_class=FORMATTER
        )

    ask = command("ask", "answer questions over a document or a saved memory bank")
    source = ask.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the document: plain text, or .jsonl with one document per line")
    source.add_argument(
        "--memory", help="a bank folder written by `lychee-hf compress` (no compression needed), or a corpus folder"
    )
    asked = ask.add_mutually_exclusive_group(required=True)
    asked.add_argument("--question", action="append", help="a question; repeat for several")
    asked.add_argument("--questions", help="JSONL, one {document, question} per line, over --memory (answers: --out)")
    ask.add_argument("--out", help="with --questions: a new JSONL file for the answers, in input order")
    ask.add_argument(
        "--batch-size", type=positive_int, help="with --questions: questions per generate call (default 8)"
    )
    ask.add_argument("--trace", action="store_true", help="print a per-block table (gate, memory, timings)")
    ask.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="OUT",
        help="write answers + traces as JSON to OUT (or stdout without OUT); answers are still printed",
    )
    ask.add_argument("--overwrite", action="store_true", help="let --json OUT replace an existing file")
    _add_document_arguments(ask)
    _add_model_arguments(ask)
    _add_block_arguments(ask)
    _add_memory_budget_argument(ask)
    _add_answer_arguments(ask)
    gate = ask.add_argument_group("gate policy (default: the checkpoint's)")
    gate.add_argument("--gate-threshold", type=probability, help="read a block when P(related) >= this")
    gate.add_argument("--gate-max-blocks", type=positive_int, help="read at most this many blocks per question")
    gate.add_argument("--gate-keep-last", action="store_true", help="always read the last block")

    compress = command("compress", "compress a document once into a reusable memory bank (or a corpus: one per line)")
    compressed = compress.add_mutually_exclusive_group(required=True)
    compressed.add_argument("--context", help="the document: plain text, or .jsonl (one bank per line)")
    compressed.add_argument(
        "--corpus", help="JSONL corpus: one bank per document + corpus.json; resumable; splits over processes"
    )
    compress.add_argument("--out", required=True, help="new folder for the bank (numbered subfolders for .jsonl)")
    compress.add_argument("--id-field", help="with --corpus: the field holding each document's id (default: id)")
    _add_document_arguments(compress)
    add_bank_dtype_argument(compress)
    again = compress.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted bank in --out")
    again.add_argument("--overwrite", action="store_true", help="replace the bank in --out")
    _add_model_arguments(compress)
    _add_block_arguments(compress)

    info = command(
        "info",
        "print the settings of a checkpoint or a memory bank",
        "Print what a LycheeMemory checkpoint folder (config.json) or a memory bank folder (bank.json) holds: "
        "backbone, block settings, gate, role adapters; for a bank its blocks, tokens, size and the model "
        "fingerprint it needs. Only the settings that apply to the block kind (lossless or memory tokens) are shown.",
    )
    info.add_argument("path", help="a checkpoint folder or a bank folder")

    convert = command("convert", "convert an authors'-format (or stock) checkpoint to lychee-hf")
    add_convert_arguments(convert)

    bank = command("bank", "memory-bank tools: convert a bank to another storage format")
    add_bank_commands(bank)

    push = command("push", "upload a checkpoint (model repo) or a memory bank (dataset repo)")
    add_push_arguments(push)

    evaluate = command("eval", "evaluate methods on generated tasks or your data")
    evaluate.add_argument("--task", required=True, help="mhqa, niah, vt (generated) or jsonl, hotpotqa (--data)")
    evaluate.add_argument("--lengths", default="7k", help="comma-separated context lengths, e.g. 7k,28k,112k")
    evaluate.add_argument("--n", type=positive_int, default=8, help="examples per length (default 8)")
    evaluate.add_argument(
        "--method",
        default="lychee",
        help="comma-separated: lychee, lychee-lossless, lychee-compressed, lychee-gate, lychee-nogate, memagent, full",
    )
    evaluate.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    evaluate.add_argument("--data", help="JSONL (MemAgent schema) or HotpotQA JSON for --task jsonl / hotpotqa")
    evaluate.add_argument("--seed", type=int, default=0, help="generator seed (default 0: the held-out seed)")
    evaluate.add_argument(
        "--memagent-chunk", type=positive_int, default=5000, help="raw tokens per MemAgent chunk (default 5000)"
    )
    _add_model_arguments(evaluate)
    _add_block_arguments(evaluate)
    _add_memory_budget_argument(evaluate)
    _add_answer_arguments(evaluate)

    train_gate = command("train-gate", "train the gate adapter (classifier) on labelled examples")
    train_gate.add_argument("--task", required=True, help="mhqa, niah, vt (generated) or jsonl, hotpotqa (--data)")
    train_gate.add_argument("--data", help="JSONL (MemAgent schema + 'supporting') or HotpotQA JSON")
    train_gate.add_argument("--length", default="4k", help="context length of generated examples (default 4k)")
    train_gate.add_argument("--n", type=positive_int, default=64, help="examples (a quarter is held out; default 64)")
    train_gate.add_argument(
        "--seed", type=int, default=1000, help="generator seed (default 1000: disjoint from eval's default 0)"
    )
    train_gate.add_argument("--out", required=True, help="new folder: the model with its gate adapter + metrics")
    train_gate.add_argument("--epochs", type=float, default=3.0, help="training epochs (default 3)")
    train_gate.add_argument("--learning-rate", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    train_gate.add_argument("--batch-size", type=positive_int, default=8, help="rows per step (default 8)")
    train_gate.add_argument("--lora-r", type=positive_int, default=8, help="rank of the gate's LoRA (default 8)")
    train_gate.add_argument(
        "--teacher", choices=["gold", "initial"], default="gold", help="working memory the gate sees (default gold)"
    )
    train_gate.add_argument("--eval-fraction", type=float, default=0.25, help="held-out share (default 0.25)")
    train_gate.add_argument("--bank-dir", help="keep the training banks on disk here (large models / many rows)")
    _add_model_arguments(train_gate)
    _add_block_arguments(train_gate)
    _add_memory_budget_argument(train_gate)

    pretrain = command("pretrain-compressor", "train the memory tokens (continuation loss through a compressed block)")
    pretrain.add_argument("--out", required=True, help="new folder: the model with trained memory weights + metrics")
    pretrain.add_argument("--text", help="a UTF-8 text file to train on (default: CPython's bundled docs)")
    pretrain.add_argument(
        "--continuation-tokens", type=positive_int, default=128, help="tokens predicted after the block (default 128)"
    )
    pretrain.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    pretrain.add_argument("--learning-rate", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    pretrain.add_argument("--batch-size", type=positive_int, default=2, help="windows per step (default 2)")
    pretrain.add_argument("--max-train-rows", type=positive_int, help="at most this many training windows")
    pretrain.add_argument("--max-eval-rows", type=positive_int, default=32, help="held-out windows (default 32)")
    pretrain.add_argument(
        "--compressor-lora-r", type=positive_int, help="also train a compressor LoRA adapter of this rank"
    )
    pretrain.add_argument("--seed", type=int, default=0, help="seed of the window split and training (default 0)")
    _add_model_arguments(pretrain)
    _add_block_arguments(pretrain)

    rl = command("train-rl", "end-to-end GRPO: reasoner adapter + compressor, rewarded on the final answer")
    rl.add_argument("--task", default="niah,vt", help="comma-separated generated tasks (mhqa, niah, vt)")
    rl.add_argument("--data", help="your questions instead: JSONL in the MemAgent/verl schema")
    rl.add_argument("--lengths", default="1k", help="curriculum: comma-separated context lengths, shortest first")
    rl.add_argument("--n", type=positive_int, default=16, help="examples per task and length (default 16)")
    rl.add_argument("--seed", type=int, default=1000, help="generator seed of the first stage (default 1000)")
    rl.add_argument("--held-out-seed", type=int, default=0, help="eval seed training must not use (default 0)")
    rl.add_argument("--out", required=True, help="new folder: the trained model + rl_log.json")
    rl.add_argument("--num-generations", type=positive_int, default=4, help="episodes per question (default 4)")
    rl.add_argument(
        "--questions-per-step", type=positive_int, default=1, help="questions per optimizer step (default 1)"
    )
    rl.add_argument("--epochs", type=float, default=1.0, help="passes over the curriculum (default 1)")
    rl.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: one epoch)")
    rl.add_argument("--learning-rate", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    rl.add_argument("--beta", type=float, default=0.0, help="KL coefficient against the adapter-free reference")
    rl.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of episodes (default 1)")
    rl.add_argument("--reward", choices=["sub_em", "em", "f1"], default="sub_em", help="answer reward (default sub_em)")
    rl.add_argument("--format-reward", type=float, default=0.0, help="bonus for a non-empty answer that stops")
    rl.add_argument("--lora-r", type=positive_int, default=8, help="rank of a new reasoner adapter (default 8)")
    rl.add_argument(
        "--max-completion-length", type=positive_int, help="tokens per memory update (default: memory budget)"
    )
    rl.add_argument("--no-compressor", action="store_true", help="train the reasoner adapter only")
    rl.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    rl.add_argument("--max-minutes", type=float, help="stop cleanly after this much wall time (steps so far kept)")
    _add_model_arguments(rl)
    _add_block_arguments(rl)
    _add_memory_budget_argument(rl)
    return parser


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `lychee-hf push` (shared with conversion/push_to_hub.py)."""
    parser.add_argument("folder", help="a lychee-hf checkpoint or memory-bank folder")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private (default public)")
    parser.add_argument("--revision", help="branch to upload to (created if missing)")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--dry-run", action="store_true", help="print the file list and the card; send nothing")
    parser.add_argument("--no-check", action="store_true", help="skip the reload-and-generate check (not advised)")


# The storage formats of `modeling/kv_quant_lychee.py` (a test keeps them equal), spelled here so that building the
# parser imports no torch: `lychee-hf --help` stays instant.
BANK_DTYPES = ("float32", "float16", "bfloat16", "int8", "int4")


def add_bank_dtype_argument(parser: argparse.ArgumentParser, default_help: str = "float16 for float32 models") -> None:
    parser.add_argument(
        "--bank-dtype",
        choices=BANK_DTYPES,
        help=f"storage format of the blocks (int8/int4: quantized K/V; default: {default_help}, else the model's)",
    )


def add_bank_commands(parser: argparse.ArgumentParser) -> None:
    """`lychee-hf bank ...` subcommands."""
    tools = parser.add_subparsers(dest="bank_command", required=True, metavar="TOOL", help="convert")
    convert = tools.add_parser(
        "convert",
        help="rewrite a bank in another storage format (or v1 -> sharded v2)",
        description="Rewrite a bank in another storage format (or a version-1 bank as sharded version 2).",
        epilog=EXAMPLES["bank"],
        formatter_class=FORMATTER,
    )
    convert.add_argument("source", help="a bank folder")
    convert.add_argument("destination", help="new folder for the converted bank")
    add_bank_dtype_argument(convert, default_help="the source's format")
    convert.add_argument("--max-shard-size", type=float, default=512, help="shard size in MiB (default 512)")


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


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model runs the command, in which dtype, and how chatty it is."""
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: the embedded SmolLM2-135M model)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: the checkpoint's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or build messages")


def _add_document_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--field", default="context", help="JSONL field holding the document (default: context)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the context file (default: utf-8)")


def _add_block_arguments(parser: argparse.ArgumentParser) -> None:
    """How documents become blocks (overrides the checkpoint's settings)."""
    parser.add_argument(
        "--ratio", type=non_negative_int, help="compress with memory tokens at this ratio (0: lossless blocks)"
    )
    parser.add_argument("--chunk-size", type=positive_int, help="source tokens per block")


def _add_memory_budget_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-budget", type=positive_int, help="max working-memory tokens")


def _add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=positive_int, help="max answer tokens (default: the checkpoint's)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_bitsandbytes_cpu_note()
    try:
        commands = {
            "ask": run_ask,
            "compress": run_compress,
            "info": run_info,
            "bank": run_bank,
            "convert": run_convert,
            "push": run_push,
            "eval": run_eval_command,
            "train-gate": run_train_gate,
            "pretrain-compressor": run_pretrain_compressor,
            "train-rl": run_train_rl,
        }
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("lychee-hf: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for the user; the traceback on request
        if os.environ.get("LYCHEE_HF_DEBUG"):
            raise
        print(f"lychee-hf: error: {error}", file=sys.stderr)
        return EXIT_ERROR


# --------------------------------------------------------------------------------------------- commands
def run_ask(args: argparse.Namespace) -> int:
    from .documents import read_documents
    from .modeling import LycheeMemoryBank

    if args.questions:
        from .scale.questions import run_questions_command

        return run_questions_command(args)
    if args.out or args.batch_size:
        raise ValueError("--out and --batch-size go with --questions (for --question, --json OUT writes the answers)")
    # Inputs and outputs first: a missing file, an empty question or an unwritable OUT fails before the model loads.
    questions = _checked_questions(args.question)
    if args.json and args.json != "-":
        _check_output_file(Path(args.json), args.overwrite)
    if args.memory:
        bank = LycheeMemoryBank.from_pretrained(args.memory)
        sources = [(args.memory, dict(memory=bank))]
    else:
        documents = read_documents(args.context, args.field, args.encoding)
        sources = [
            (f"{args.context}#{i}" if len(documents) > 1 else args.context, dict(context=text))
            for i, text in enumerate(documents)
        ]
    model, tokenizer = load_model(args)
    if args.memory:
        bank.check_compatible(model.memory_fingerprint())
    results = []
    try:
        for name, source in sources:
            _answer_source(model, tokenizer, name, source, questions, args, results)
        _report(results, args)
    except (Exception, KeyboardInterrupt) as error:
        if not results:
            raise
        saved = _save_partial_results(results, args)
        message = f"{len(results)} answer(s) computed before this failure were saved to {saved}"
        if isinstance(error, KeyboardInterrupt):
            print(f"lychee-hf: {message}", file=sys.stderr)
            raise
        raise RuntimeError(f"{error} ({message})") from error
    return 0


def _answer_source(model, tokenizer, name: str, source: dict, questions: list[str], args, results: list) -> None:
    """Every question over one document (compressed once) or one bank, each answer appended to `results` as soon
    as it exists (so a later failure loses none)."""
    import torch

    if "context" in source:
        ids = _encode(tokenizer, source["context"], args.context)
        started = time.perf_counter()
        bank = model.compress(ids, show_progress=None if not args.quiet else False)
        compress_seconds = time.perf_counter() - started
    else:
        bank, compress_seconds = source["memory"], 0.0
    gate_policy = {
        key: value
        for key, value in (
            ("gate_threshold", args.gate_threshold),
            ("gate_max_blocks", args.gate_max_blocks),
            ("gate_keep_last", True if args.gate_keep_last else None),
        )
        if value is not None
    }
    for question in questions:
        question_ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
        started = time.perf_counter()
        output = model.generate(
            input_ids=question_ids,
            memory=bank,
            return_dict_in_generate=True,
            show_progress=None if not args.quiet else False,
            **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}),
            **gate_policy,
        )
        answer = tokenizer.decode(output.sequences[0, question_ids.shape[1] :], skip_special_tokens=True).strip()
        seconds = time.perf_counter() - started
        results.append(_result(name, question, answer, output.trace[0], tokenizer, compress_seconds, seconds))


def _checked_questions(questions: list[str]) -> list[str]:
    for number, question in enumerate(questions, start=1):
        if not question.strip():
            raise ValueError(f"--question number {number} is empty: ask something (or drop it)")
    return questions


def _check_output_file(path: Path, overwrite: bool) -> None:
    """Refuses an OUT that exists (unless `overwrite`) or cannot be written, before any work is done."""
    if path.is_dir():
        raise IsADirectoryError(f"--json {path} is a folder: name a file")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists: pass --overwrite to replace it, or name a new file (nothing is overwritten)"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"--json {path}: folder {folder} does not exist")
    import tempfile

    try:  # the only reliable writability test (permissions, read-only mounts, root)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lychee-hf-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"--json {path}: cannot write in {folder} ({error.strerror})") from None


def _save_partial_results(results: list[dict], args: argparse.Namespace) -> Path:
    """Writes answers computed before a failure somewhere they survive: next to OUT, here, or the temp folder."""
    import tempfile

    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"lychee-hf-answers-{stamp}-{os.getpid()}.json"
    folders = [Path(args.json).parent] if args.json and args.json != "-" else []
    folders += [Path.cwd(), Path(tempfile.gettempdir())]
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    for folder in folders:
        try:
            target = (folder if str(folder) else Path(".")) / name
            target.write_text(text, encoding="utf-8")
            return target
        except OSError:
            continue
    raise OSError("no folder could take the partial answers")


def run_compress(args: argparse.Namespace) -> int:
    from .bank_tools import bank_line, check_new_bank_folder, compress_to_disk
    from .documents import read_documents

    if args.corpus:
        from .scale.corpus import run_corpus_command

        return run_corpus_command(args)
    if args.id_field:
        raise ValueError("--id-field goes with --corpus")
    documents = read_documents(args.context, args.field, args.encoding)
    out = Path(args.out)
    if not (args.resume or args.overwrite):
        check_new_bank_folder(out)
    model, tokenizer = load_model(args)
    for index, text in enumerate(documents):
        target = out if len(documents) == 1 else out / f"{index:05d}"
        ids = _encode(tokenizer, text, args.context)
        bank = compress_to_disk(
            model,
            ids,
            target,
            show_progress=None if not args.quiet else False,
            bank_dtype=args.bank_dtype,
            resume=args.resume,
            overwrite=args.overwrite,
        )
        print(bank_line(target, bank))
    return 0


def run_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "bank.json").is_file():
        from .bank_tools import describe_bank
        from .modeling import LycheeMemoryBank

        summary = {  # every block is read and checksummed: a damaged bank is an error here, not a surprise later
            "kind": "memory bank",
            **describe_bank(LycheeMemoryBank.from_pretrained(path), verify=True),
            "size_mib": round(_folder_size(path) / 2**20, 2),
        }
    elif (path / "config.json").is_file():
        summary = {"kind": "checkpoint", **_checkpoint_summary(path)}
    else:
        raise FileNotFoundError(f"{path} is neither a checkpoint (config.json) nor a memory bank (bank.json)")
    summary = _applicable_settings(summary)
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0


# Settings that only describe memory-token compression: a lossless block is the chunk's own K/V.
MEMORY_TOKEN_SETTINGS = ("compression_ratio", "compression_window", "memory_token_placement")


def _applicable_settings(summary: dict) -> dict:
    if summary.get("compression_mode") != "lossless":
        return summary
    return {key: value for key, value in summary.items() if key not in MEMORY_TOKEN_SETTINGS}


def run_bank(args: argparse.Namespace) -> int:
    return {"convert": run_bank_convert}[args.bank_command](args)


def run_bank_convert(args: argparse.Namespace) -> int:
    from .bank_tools import bank_line, convert_bank

    if args.max_shard_size <= 0:
        raise ValueError(f"--max-shard-size {args.max_shard_size} must be positive (MiB)")
    bank = convert_bank(args.source, args.destination, args.bank_dtype, int(args.max_shard_size * 2**20))
    print(bank_line(args.destination, bank))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .convert_reference import convert_reference_checkpoint

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


def run_push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    result = push_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        check=not args.no_check,
    )
    print(result.describe() if args.dry_run else f"uploaded: {result}")
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    from .data import parse_length
    from .eval.runner import EvalSettings, run_eval
    from .scale.distributed import distributed_state, load_model_on_each_process

    settings = EvalSettings(
        task=args.task,
        lengths=[parse_length(text) for text in args.lengths.split(",")],
        n=args.n,
        methods=[m.strip() for m in args.method.split(",")],
        seed=args.seed,
        data=args.data,
        max_new_tokens=args.max_new_tokens,
        memagent_chunk_tokens=args.memagent_chunk,
    )
    state = distributed_state()  # under accelerate launch / torchrun, processes share the examples
    model, tokenizer = load_model_on_each_process(args, state)
    summary = run_eval(model, tokenizer, settings, args.out, not args.quiet, state)
    if state.is_main_process:
        print(summary.read_text())
    return 0


def run_train_gate(args: argparse.Namespace) -> int:
    from .data import parse_length
    from .eval.runner import EvalSettings, examples_for
    from .training.gate import GateTrainingConfig, train_gate

    out = _new_folder(args.out, "the trained model")
    settings = EvalSettings(task=args.task, n=args.n, seed=args.seed, data=args.data)
    model, tokenizer = load_model(args)
    examples = examples_for(settings, tokenizer, parse_length(args.length))
    config = GateTrainingConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        teacher=args.teacher,
        eval_fraction=args.eval_fraction,
        bank_dir=args.bank_dir,
        seed=args.seed,
        disable_tqdm=args.quiet,
    )
    result = train_gate(model, tokenizer, examples, config)
    if not _main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    _save_trained(model, tokenizer, out)
    metrics = {
        "task": args.task,
        "examples": len(examples),
        "train_rows": result.train_rows,
        "eval_rows": result.eval_rows,
        "positive_weight": result.positive_weight,
        "held_out_before": result.metrics_before,
        "held_out_after": result.metrics,
    }
    (out / "gate_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(_metrics_table(result.metrics_before, result.metrics))
    print(f"wrote {out} (gate adapter in {out / 'gate'})")
    return 0


def run_pretrain_compressor(args: argparse.Namespace) -> int:
    from .training.compressor import CompressorPretrainingConfig, pretrain_compressor

    out = _new_folder(args.out, "the trained model")
    train_text = eval_text = None  # None: CPython's bundled docs
    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        cut = int(len(text) * 0.9)  # the last tenth is held out
        train_text, eval_text = text[:cut], text[cut:]
    model, tokenizer = load_model(args)
    config = CompressorPretrainingConfig(
        output_dir=str(out / "trainer"),
        continuation_tokens=args.continuation_tokens,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        max_train_rows=args.max_train_rows,
        max_eval_rows=args.max_eval_rows,
        compressor_lora_r=args.compressor_lora_r,
        seed=args.seed,
        disable_tqdm=args.quiet,
    )
    result = pretrain_compressor(model, tokenizer, config, train_text, eval_text)
    if not _main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    _save_trained(model, tokenizer, out)
    metrics = {"train_rows": result.train_rows, "eval_rows": result.eval_rows, "before": result.before}
    metrics["after"] = result.after
    (out / "compressor_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    lines = [f"{'held-out loss (nats/token)':<28}{'before':>8}{'after':>8}", "-" * 44]
    for name in ("compressed", "raw", "none"):
        lines.append(f"{name:<28}{result.before[name]:>8.3f}{result.after[name]:>8.3f}")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


def run_train_rl(args: argparse.Namespace) -> int:
    from .data import parse_length
    from .training.curriculum import check_disjoint_seeds, curriculum_examples
    from .training.data import TimeLimitCallback
    from .training.rl import LycheeGRPOConfig, train_rl

    out = _new_folder(args.out, "the trained model")
    lengths = [parse_length(text) for text in args.lengths.split(",")]
    if not args.data:
        check_disjoint_seeds(args.seed, len(lengths), args.held_out_seed)
    model, tokenizer = load_model(args)
    if args.data:
        from .data import load_memagent_jsonl

        examples = load_memagent_jsonl(args.data)
    else:
        examples = curriculum_examples(tokenizer, args.task.split(","), lengths, args.n, args.seed)
    config = LycheeGRPOConfig(
        output_dir=str(out / "trainer"),
        num_generations=args.num_generations,
        per_device_train_batch_size=args.num_generations * args.questions_per_step,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        beta=args.beta,
        temperature=args.temperature,
        reward=args.reward,
        format_reward=args.format_reward,
        reasoner_lora_r=args.lora_r,
        reasoner_lora_alpha=2 * args.lora_r,
        max_completion_length=args.max_completion_length,
        train_compressor=not args.no_compressor,
        activation_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        disable_tqdm=args.quiet,
    )
    started = time.perf_counter()
    callbacks = [TimeLimitCallback(args.max_minutes)] if args.max_minutes else None
    result = train_rl(model, tokenizer, examples, config, callbacks=callbacks)
    seconds = time.perf_counter() - started
    if not _main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    _save_trained(model, tokenizer, out)
    log = [entry for entry in result.trainer.state.log_history if "reward" in entry]
    steps = result.trainer.state.global_step
    settings = json.loads(config.to_json_string())
    record = {"examples": len(examples), "steps": steps, "seconds": seconds, "config": settings, "log": log}
    (out / "rl_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(_reward_table(log))
    questions = steps * config.questions_per_device * config.gradient_accumulation_steps
    print(f"wrote {out} ({steps} steps, {questions} of {len(examples)} questions, {seconds:.0f} s)")
    return 0


def _reward_table(log: list[dict], rows: int = 5) -> str:
    """Mean reward over consecutive slices of the training log (at most `rows` lines)."""
    if not log:
        return "no training steps were logged"
    size = max(1, -(-len(log) // rows))
    lines = [f"{'steps':<12}{'reward':>8}{'correct':>9}{'turns':>7}", "-" * 36]
    for start in range(0, len(log), size):
        part = log[start : start + size]
        mean = {key: sum(entry[key] for entry in part) / len(part) for key in ("reward", "answer_correct", "turns")}
        steps = f"{part[0]['step']}-{part[-1]['step']}"
        lines.append(f"{steps:<12}{mean['reward']:>8.3f}{mean['answer_correct']:>9.3f}{mean['turns']:>7.2f}")
    return "\n".join(lines)


def _metrics_table(before: dict, after: dict) -> str:
    names = ["precision", "recall", "f1", "auroc", "accuracy", "predicted_positive_rate"]
    lines = [f"{'held-out':<24}{'before':>8}{'after':>8}", "-" * 40]
    lines += [f"{name:<24}{before[name]:>8.3f}{after[name]:>8.3f}" for name in names]
    lines.append(f"{'rows (related share)':<24}{after['n']:>8}{after['positive_rate']:>8.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- helpers
def _new_folder(path: str, what: str) -> Path:
    """`path` as a folder to write `what` into: refused if it already holds anything (nothing is overwritten).

    Under several processes, every process checks before any of them writes into it."""
    from .scale.distributed import distributed_state

    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new folder for {what} (nothing is overwritten)")
    distributed_state().wait_for_everyone()
    return out


def _main_process() -> bool:
    from .scale.distributed import distributed_state

    return distributed_state().is_main_process


def _save_trained(model, tokenizer, out: Path) -> None:
    """Writes a trained model and its tokenizer to `out`, dropping the Trainer's output_dir if it stayed empty."""
    trainer_dir = out / "trainer"  # save_strategy="no" leaves it empty
    if trainer_dir.is_dir() and not any(trainer_dir.iterdir()):
        trainer_dir.rmdir()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_model(args: argparse.Namespace):
    """The model and tokenizer named by `--model` (default: the embedded model), with the CLI's overrides."""
    import torch
    from transformers import AutoTokenizer

    from . import register_auto_classes
    from .modeling import LycheeMemoryForCausalLM

    register_auto_classes()  # the tokenizer's folder names the model classes in its config's auto_map
    if args.quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
    if args.model:
        path = args.model
    else:
        from .default_model import ensure_default_model
        from .scale.distributed import distributed_state

        with distributed_state().main_process_first():  # several processes: the main one builds it once
            path = ensure_default_model(verbose=not args.quiet)
    overrides = {}
    ratio, chunk_size = getattr(args, "ratio", None), getattr(args, "chunk_size", None)
    if ratio is not None:
        overrides["compression_mode"] = "lossless" if ratio == 0 else "memory_tokens"
        if ratio:
            overrides["compression_ratio"] = ratio
    if chunk_size is not None:
        overrides["chunk_size"] = chunk_size
        overrides["compression_window"] = chunk_size
    if getattr(args, "memory_budget", None) is not None:
        overrides["memory_budget"] = args.memory_budget
    dtype = getattr(torch, args.dtype) if args.dtype else "auto"
    model = LycheeMemoryForCausalLM.from_pretrained(path, dtype=dtype, **overrides)  # validated before building
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def _encode(tokenizer, text: str, source: str):
    import torch

    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"context {source} is empty after tokenization")
    return torch.tensor([ids])


def _result(name, question, answer, trace, tokenizer, compress_seconds, seconds) -> dict:
    return {
        "source": name,
        "question": question,
        "answer": answer,
        "compress_seconds": round(compress_seconds, 3),
        "answer_seconds": round(seconds, 3),
        "trace": [
            {
                "block": r.block_index,
                "span": list(r.span),
                "gate_score": round(r.gate_score, 4),
                "kept": r.kept,
                "gate_decision": r.gate_decision,
                "memory_tokens": len(r.memory_ids),
                "memory": tokenizer.decode(r.memory_ids, skip_special_tokens=True),
                "tokens_decoded": r.tokens_decoded,
                "seconds": round(r.gate_seconds + r.reason_seconds, 3),
            }
            for r in trace
        ],
    }


def _report(results: list[dict], args: argparse.Namespace) -> None:
    if args.json:
        text = json.dumps(results if len(results) > 1 else results[0], indent=2, ensure_ascii=False)
        if args.json == "-":
            print(text)
            return
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    for result in results:
        if len(results) > 1:
            print(f"Q: {result['question']}")
        print(result["answer"])
        if args.trace:
            print(_trace_table(result["trace"]))
    if args.json:
        print(f"answers and traces written to {args.json}", file=sys.stderr)


def _trace_table(trace: list[dict]) -> str:
    columns = f"{'block':>5}  {'span':>13}  {'gate':>6}  {'kept':>4}  {'memory':>6}  {'decoded':>7}  {'seconds':>7}"
    header = columns + "  memory text"
    lines = [header, "-" * len(header)]
    for r in trace:
        span = f"{r['span'][0]}-{r['span'][1]}"
        memory = r["memory"].replace("\n", " ")
        memory = memory if len(memory) <= 60 else memory[:57] + "..."
        lines.append(
            f"{r['block']:>5}  {span:>13}  {r['gate_score']:>6.3f}  {'yes' if r['kept'] else 'no':>4}  "
            f"{r['memory_tokens']:>6}  {r['tokens_decoded']:>7}  {r['seconds']:>7.2f}  {memory}"
        )
    return "\n".join(lines)


def _checkpoint_summary(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "lychee_memory":
        raise ValueError(f"{path} is a {config.get('model_type')!r} checkpoint, not a LycheeMemory one")
    text = config.get("text_config", {})
    keys = [
        "compression_mode",
        "chunk_size",
        "compression_window",
        "compression_ratio",
        "memory_token_placement",
        "memory_budget",
        "max_answer_tokens",
        "position_scheme",
        "gate_type",
        "gate_threshold",
        "role_adapters",
    ]
    return {
        "backbone": f"{text.get('model_type')} ({text.get('num_hidden_layers')} layers, "
        f"hidden {text.get('hidden_size')})",
        "dtype": config.get("dtype") or text.get("dtype"),
        **{key: config.get(key) for key in keys},
    }


def _quiet_bitsandbytes_cpu_note() -> None:
    """Drops bitsandbytes' import-time note about an optional CPU kernel package (printed on every command on
    CPUs with AVX512-BF16, quantized or not); every other bitsandbytes message still shows."""
    import logging

    class _DropKernelNote(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropKernelNote())


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


if __name__ == "__main__":
    sys.exit(main())
