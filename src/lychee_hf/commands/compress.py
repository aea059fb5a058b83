"""`lychee-hf compress`: compress a document once into a reusable memory bank (or a corpus: one bank per line)."""

import argparse
import sys
from pathlib import Path

from .arguments import (
    add_bank_dtype_argument,
    add_block_arguments,
    add_command,
    add_document_arguments,
    add_model_arguments,
    show_progress,
)
from .loading import load_model

NAME = "compress"
EXIT_NOTHING_COMPRESSED = 2  # --corpus: every document failed (the CLI's error status)
EXAMPLES = """examples:
  lychee-hf compress --context examples/harbor_town.txt --out bank/
  lychee-hf compress --context docs.jsonl --out banks/          # one numbered bank per line
  lychee-hf compress --context long.txt --out bank/ --ratio 4   # memory tokens instead of lossless blocks
  lychee-hf compress --corpus docs.jsonl --out banks/            # one bank per document + corpus.json; resumable
  lychee-hf compress --corpus docs.jsonl --out banks/ --overwrite   # compress every document again
  accelerate launch -m lychee_hf.cli compress --corpus docs.jsonl --out banks/   # documents split over GPUs

With --corpus, a document that cannot be compressed is listed with its reason and the others go on: the exit status
is 0 when at least one document has a bank (the summary counts the failures), 2 when none has. A run into a folder
that another run is writing is refused (--out holds a lock, .lock, while a run writes it)."""


def add_parser(commands) -> argparse.ArgumentParser:
    help = "compress a document once into a reusable memory bank (or a corpus: one per line)"
    parser = add_command(commands, NAME, help, EXAMPLES)
    compressed = parser.add_mutually_exclusive_group(required=True)
    compressed.add_argument("--context", help="the document: plain text, or .jsonl (one bank per line)")
    compressed.add_argument(
        "--corpus", help="JSONL corpus: one bank per document + corpus.json; resumable; splits over processes"
    )
    parser.add_argument("--out", required=True, help="new folder for the bank (numbered subfolders for .jsonl)")
    parser.add_argument(
        "--id-field",
        help="with --corpus: the field every line names its id in (default: id where a line has it, else its number)",
    )
    add_document_arguments(parser)
    add_bank_dtype_argument(parser)
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue an interrupted bank in --out (a --corpus run always resumes)"
    )
    again.add_argument(
        "--overwrite", action="store_true", help="replace the bank in --out (--corpus: compress every document again)"
    )
    add_model_arguments(parser)
    add_block_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..bank_tools import bank_line, check_new_bank_folder, compress_to_disk
    from ..documents import read_documents
    from ..text_banks import encode_document

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file: name a folder")
    if args.corpus is not None:
        return _run_corpus(args)
    if args.id_field is not None:
        raise ValueError("--id-field goes with --corpus")
    documents = read_documents(args.context, args.field, args.encoding)
    if not (args.resume or args.overwrite):
        check_new_bank_folder(out)
    model, tokenizer = load_model(args)
    for index, text in enumerate(documents):
        target = out if len(documents) == 1 else out / f"{index:05d}"
        # one tokenization for the ids and the text's offsets; an empty document is refused with its file name
        ids, document_text = encode_document(tokenizer, text, model.config.chunk_size, f"context {args.context}")
        bank = compress_to_disk(
            model,
            ids,
            target,
            text=document_text,
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
    read_corpus(args.corpus, args.field, args.id_field, args.encoding)  # a missing or empty corpus fails first
    model, tokenizer = load_model(args, state)
    summary = compress_corpus(
        model,
        tokenizer,
        args.corpus,
        args.out,
        args.field,
        args.id_field,
        state,
        show_progress=not args.quiet,
        encoding=args.encoding,
        bank_dtype=args.bank_dtype,
        overwrite=args.overwrite,
    )
    if state.is_main_process:
        print(summary.describe())
    if not summary.usable:
        if state.is_main_process:
            print(f"lychee-hf: error: no document of {args.corpus} could be compressed", file=sys.stderr)
        return EXIT_NOTHING_COMPRESSED
    return 0
