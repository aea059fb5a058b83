"""`lychee-hf compress`: compress a document once into a reusable memory bank (or a corpus: one bank per line)."""

import argparse
from pathlib import Path

from .arguments import (
    add_bank_dtype_argument,
    add_block_arguments,
    add_command,
    add_document_arguments,
    add_model_arguments,
    show_progress,
)
from .loading import encode, load_model

NAME = "compress"
EXAMPLES = """examples:
  lychee-hf compress --context examples/harbor_town.txt --out bank/
  lychee-hf compress --context docs.jsonl --out banks/          # one numbered bank per line
  lychee-hf compress --context long.txt --out bank/ --ratio 4   # memory tokens instead of lossless blocks
  lychee-hf compress --corpus docs.jsonl --out banks/            # one bank per document + corpus.json; resumable
  accelerate launch -m lychee_hf.cli compress --corpus docs.jsonl --out banks/   # documents split over GPUs"""


def add_parser(commands) -> argparse.ArgumentParser:
    help = "compress a document once into a reusable memory bank (or a corpus: one per line)"
    parser = add_command(commands, NAME, help, EXAMPLES)
    compressed = parser.add_mutually_exclusive_group(required=True)
    compressed.add_argument("--context", help="the document: plain text, or .jsonl (one bank per line)")
    compressed.add_argument(
        "--corpus", help="JSONL corpus: one bank per document + corpus.json; resumable; splits over processes"
    )
    parser.add_argument("--out", required=True, help="new folder for the bank (numbered subfolders for .jsonl)")
    parser.add_argument("--id-field", help="with --corpus: the field holding each document's id (default: id)")
    add_document_arguments(parser)
    add_bank_dtype_argument(parser)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted bank in --out")
    again.add_argument("--overwrite", action="store_true", help="replace the bank in --out")
    add_model_arguments(parser)
    add_block_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..bank_tools import bank_line, check_new_bank_folder, compress_to_disk
    from ..documents import read_documents

    if args.corpus:
        return _run_corpus(args)
    if args.id_field:
        raise ValueError("--id-field goes with --corpus")
    documents = read_documents(args.context, args.field, args.encoding)
    out = Path(args.out)
    if not (args.resume or args.overwrite):
        check_new_bank_folder(out)
    model, tokenizer = load_model(args)
    for index, text in enumerate(documents):
        target = out if len(documents) == 1 else out / f"{index:05d}"
        ids = encode(tokenizer, text, args.context)
        bank = compress_to_disk(
            model,
            ids,
            target,
            show_progress=show_progress(args),
            bank_dtype=args.bank_dtype,
            resume=args.resume,
            overwrite=args.overwrite,
        )
        print(bank_line(target, bank))
    return 0


def _run_corpus(args: argparse.Namespace) -> int:
    """`lychee-hf compress --corpus DOCS.jsonl --out BANKS_DIR` (under any launcher)."""
    from ..scale.corpus import compress_corpus, read_corpus
    from ..scale.distributed import distributed_state

    state = distributed_state()
    id_field = args.id_field or "id"
    read_corpus(args.corpus, args.field, id_field, args.encoding)  # a missing or empty corpus fails first
    model, tokenizer = load_model(args, state)
    summary = compress_corpus(
        model,
        tokenizer,
        args.corpus,
        args.out,
        args.field,
        id_field,
        state,
        show_progress=not args.quiet,
        encoding=args.encoding,
        bank_dtype=args.bank_dtype,
    )
    if state.is_main_process:
        print(summary.describe())
    return 0
