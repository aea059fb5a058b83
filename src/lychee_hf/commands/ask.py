"""`lychee-hf ask`: answer questions over a document or a saved memory bank (or many questions over a corpus)."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..files import check_output_file
from .arguments import (
    add_answer_arguments,
    add_bank_dtype_argument,
    add_block_arguments,
    add_command,
    add_document_arguments,
    add_first_stage_arguments,
    add_memory_budget_argument,
    add_model_arguments,
    byte_size,
    positive_int,
    probability,
    show_progress,
)
from .loading import load_model

NAME = "ask"
EXIT_NOTHING_ANSWERED = 2  # --questions: every line failed (the CLI's error status)
EXAMPLES = """examples:
  lychee-hf ask --context examples/harbor_town.txt --question "Who founded the Saltmarsh bakery?" --trace
  lychee-hf ask --bank bank/ --question "Who founded the bakery?" --question "When was the bridge built?"
  lychee-hf ask --context docs.jsonl --field text --question "..." --json answers.json
  lychee-hf ask --context long.txt --question "..." --gate-threshold 0.3 --gate-max-blocks 4
  lychee-hf ask --context book.txt --question "..." --max-bank-memory 2GB   # bank on disk only above 2 GB
  lychee-hf ask --bank banks/ --questions q.jsonl --out answers.jsonl   # {"document": ID, "question": ...} lines
  accelerate launch -m lychee_hf.cli ask --bank banks/ --questions q.jsonl --out answers.jsonl   # all GPUs

With --questions, a line that cannot be answered gets its reason in --out and the others are answered: the exit
status is 0 when at least one question is answered, 2 when none is."""


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(commands, NAME, "answer questions over a document or a saved memory bank", EXAMPLES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the document: plain text, or .jsonl with one document per line")
    source.add_argument(
        "--bank", help="a bank folder written by `lychee-hf compress` (no compression needed), or a corpus folder"
    )
    source.add_argument("--memory", dest="memory_alias", help=argparse.SUPPRESS)  # deprecated name of --bank
    asked = parser.add_mutually_exclusive_group(required=True)
    asked.add_argument("--question", action="append", help="a question; repeat for several")
    asked.add_argument("--questions", help="JSONL, one {document, question} per line, over --bank (answers: --out)")
    parser.add_argument("--out", help="with --questions: a new JSONL file for the answers, in input order")
    parser.add_argument(
        "--batch-size", type=positive_int, help="with --questions: questions per generate call (default 8)"
    )
    parser.add_argument("--trace", action="store_true", help="print a per-block table (gate, memory, timings)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="OUT",
        help="write answers + traces as JSON to OUT (or stdout without OUT); answers are still printed",
    )
    parser.add_argument("--overwrite", action="store_true", help="let --json OUT replace an existing file")
    add_document_arguments(parser)
    add_bank_dtype_argument(parser)
    parser.add_argument(
        "--max-bank-memory",
        type=byte_size,
        metavar="SIZE",
        help="keep the compressed --context in memory up to SIZE (e.g. 2GB); a larger bank is written to a temporary "
        "folder (TMPDIR), read back block by block and removed, so memory stays flat (0: always on disk; default: "
        "512MB)",
    )
    add_model_arguments(parser)
    add_block_arguments(parser)
    add_memory_budget_argument(parser)
    add_answer_arguments(parser)
    gate = parser.add_argument_group("gate policy (default: the checkpoint's)")
    gate.add_argument("--gate-threshold", type=probability, help="read a block when P(related) >= this")
    gate.add_argument("--gate-max-blocks", type=positive_int, help="read at most this many blocks per question")
    gate.add_argument(
        "--gate-keep-last",
        action=argparse.BooleanOptionalAction,
        help="always read the last block (default: the model's setting)",
    )
    gate.add_argument(
        "--gate-revisit",
        action=argparse.BooleanOptionalAction,
        help="after the scan, read skipped blocks the final memory finds related (default: the model's setting)",
    )
    add_first_stage_arguments(parser)
    parser.add_argument(
        "--not-found",
        action=argparse.BooleanOptionalAction,
        help='answer "Not found in the document." when nothing answering was read, instead of inventing (default: '
        "the model's setting; on for the embedded default)",
    )
    parser.add_argument(
        "--answer-from",
        choices=("memory", "evidence"),  # the config's ANSWER_SOURCES; a literal keeps --help free of torch
        help="generate the answer from the working memory, or copy the name, number or code the reasoner scores "
        "best from the best read passage (default: the model's setting; evidence for the embedded default)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from ..documents import read_documents

    take_deprecated_bank_alias(args)
    if args.questions is not None:
        return _run_questions(args)
    refuse_inapplicable_options(args)
    # Inputs and outputs first: a missing file, an empty question or an unwritable OUT fails before the model loads.
    questions = _checked_questions(args.question)
    if args.json is not None and args.json != "-":
        check_output_file(args.json, args.overwrite)
    if args.bank is not None:
        bank = _corpus_or_bank(args)
        sources = [(args.bank, dict(bank=bank))]
    else:
        documents = read_documents(args.context, args.field, args.encoding)
        sources = [
            (f"{args.context}#{i}" if len(documents) > 1 else args.context, dict(context=text))
            for i, text in enumerate(documents)
        ]
    model, tokenizer = load_model(args)
    if args.bank is not None:
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
    if "bank" in source:
        _answer_bank(model, tokenizer, name, source["bank"], 0.0, questions, args, results)
        return
    from ..text_banks import DEFAULT_MAX_BANK_MEMORY, text_bank

    started = time.perf_counter()
    with text_bank(
        model,
        tokenizer,
        source["context"],
        f"context {args.context}",  # an empty document is refused with its file name
        DEFAULT_MAX_BANK_MEMORY if args.max_bank_memory is None else args.max_bank_memory,
        args.bank_dtype,
        show_progress(args),
    ) as bank:  # in memory, or in a temporary folder removed when the questions are answered (or on failure)
        compress_seconds = time.perf_counter() - started
        _answer_bank(model, tokenizer, name, bank, compress_seconds, questions, args, results)


def _answer_bank(model, tokenizer, name, bank, compress_seconds: float, questions: list[str], args, results: list):
    """Every question over `bank`, each answer appended to `results` as soon as it exists."""
    import torch

    from ..scale.corpus_bank import CorpusBank, name_documents

    gate_policy = _gate_policy(args)
    for question in questions:
        question_ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
        started = time.perf_counter()
        output = model.generate(
            input_ids=question_ids,
            bank=bank,
            return_dict_in_generate=True,
            show_progress=show_progress(args),
            tokenizer=tokenizer,  # lets "not found" check the question's names against the read text
            **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}),
            **gate_policy,
        )
        seconds = time.perf_counter() - started
        result = _result(name, question, output.trace[0], tokenizer, compress_seconds, seconds)
        results.append(name_documents(result, bank) if isinstance(bank, CorpusBank) else result)


def _gate_policy(args: argparse.Namespace) -> dict:
    """The gate policy and "not found" setting the options ask for (only what was given: the rest stays the
    model's)."""
    given = {
        "gate_threshold": args.gate_threshold,
        "gate_max_blocks": args.gate_max_blocks,
        "gate_keep_last": args.gate_keep_last,
        "gate_revisit": args.gate_revisit,
        "first_stage": args.first_stage,
        "first_stage_candidates": args.candidates,
        "answer_not_found": args.not_found,
        "answer_from": args.answer_from,
    }
    return {key: value for key, value in given.items() if value is not None}


def take_deprecated_bank_alias(args: argparse.Namespace) -> None:
    """`--memory BANK` still works (it was the option's name before 0.2): it warns once and fills `--bank`."""
    if getattr(args, "memory_alias", None) is not None:
        print("lychee-hf: --memory is deprecated, use --bank (same meaning)", file=sys.stderr)
        args.bank = args.memory_alias


def refuse_inapplicable_options(args: argparse.Namespace) -> None:
    """Refuses, with one line naming it, an option that does nothing on the path the other options choose, instead
    of ignoring it (tests/test_option_coverage.py walks every option of every path)."""
    from ..documents import DEFAULT_FIELD

    if args.questions is not None:
        if args.bank is None or args.out is None:
            raise ValueError("--questions needs --bank (a compressed corpus or a bank) and --out (the answers file)")
        if args.json is not None or args.trace:
            raise ValueError(
                "--json and --trace go with --question; with --questions every answer is written to --out as JSONL"
            )
        if args.field != DEFAULT_FIELD:
            raise ValueError("--field names the document field of a --context file; questions files are read as is")
        _refuse_compression_options(args)
        return
    if args.out is not None or args.batch_size is not None:
        raise ValueError("--out and --batch-size go with --questions (for --question, --json OUT writes the answers)")
    if args.overwrite and (args.json is None or args.json == "-"):
        raise ValueError("--overwrite goes with --json OUT (the file it may replace): without OUT nothing is written")
    if args.bank is not None and (args.field != DEFAULT_FIELD or not _is_utf8(args.encoding)):
        raise ValueError("--field and --encoding read a --context file; --bank reads a saved bank: drop them")
    if args.bank is not None:
        _refuse_compression_options(args)


def _refuse_compression_options(args: argparse.Namespace) -> None:
    if args.bank_dtype is not None or args.max_bank_memory is not None:
        raise ValueError(
            "--bank-dtype and --max-bank-memory say how --context is compressed; a saved bank keeps its format and "
            "is read from disk: drop them"
        )


def _is_utf8(encoding: str) -> bool:
    import codecs

    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _corpus_or_bank(args: argparse.Namespace):
    """The bank `--bank` names, or every document of a corpus folder as one bank: a corpus question names no
    document, and the first stage's index (default there: `lexical`) finds the blocks across all of them."""
    from ..modeling import LycheeMemoryBank
    from ..scale.corpus import CORPUS_MANIFEST
    from ..scale.corpus_bank import CorpusBank

    if not (Path(args.bank) / CORPUS_MANIFEST).is_file():
        return LycheeMemoryBank.from_pretrained(args.bank)
    if args.first_stage is None:
        args.first_stage = "lexical"  # without it, every question would score every block of every document
    return CorpusBank.from_folder(args.bank)


def _run_questions(args: argparse.Namespace) -> int:
    """`lychee-hf ask --bank BANKS_DIR --questions Q.jsonl --out A.jsonl` (under any launcher)."""
    from ..modeling import LycheeMemoryBank
    from ..scale.corpus import CORPUS_MANIFEST, read_corpus_manifest
    from ..scale.distributed import distributed_state
    from ..scale.questions import answer_questions, read_questions

    refuse_inapplicable_options(args)
    # Inputs and output first: a broken manifest, bank or questions file, or a taken --out, fails before loading.
    check_output_file(args.out, args.overwrite, "--out")
    state = distributed_state()
    over_corpus = (Path(args.bank) / CORPUS_MANIFEST).is_file()
    read_corpus_manifest(args.bank) if over_corpus else LycheeMemoryBank.from_pretrained(args.bank)
    read_questions(args.questions, over_corpus, args.encoding)
    model, tokenizer = load_model(args, state)
    summary = answer_questions(
        model,
        tokenizer,
        args.bank,
        args.questions,
        args.out,
        **({"batch_size": args.batch_size} if args.batch_size else {}),  # default: answer_questions'
        max_new_tokens=args.max_new_tokens,
        state=state,
        show_progress=not args.quiet,
        overwrite=args.overwrite,
        gate_policy=_gate_policy(args),
        encoding=args.encoding,
    )
    if state.is_main_process:
        print(summary.describe())
    if not summary.answered:
        if state.is_main_process:
            print(f"lychee-hf: error: no question of {args.questions} could be answered", file=sys.stderr)
        return EXIT_NOTHING_ANSWERED
    return 0


def _checked_questions(questions: list[str]) -> list[str]:
    for number, question in enumerate(questions, start=1):
        if not question.strip():
            raise ValueError(f"--question number {number} is empty: ask something (or drop it)")
    return questions


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


def _result(name, question, trace, tokenizer, compress_seconds, seconds) -> dict:
    """One answer as `--json` writes it: the source, the question, the call's times, then `LycheeTrace.to_dict`
    (the same schema the Python API gives)."""
    return {
        "source": name,
        "question": question,
        "compress_seconds": round(compress_seconds, 3),
        "seconds": round(seconds, 3),
        **trace.to_dict(tokenizer),
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
        if "documents" in result:  # a corpus question: where the answer came from
            print(f"Documents: {', '.join(result['documents']) or 'none (no block was read)'}")
        print(_evidence_lines(result))
        if args.trace:
            print(_trace_table(result))
    if args.json:
        print(f"answers and traces written to {args.json}", file=sys.stderr)


def _evidence_lines(result: dict) -> str:
    """`Evidence:` and the quoted passages with their character offsets (or why there are none)."""
    if result["evidence"] is None:
        return "Evidence: unavailable (this bank keeps no document text: recompress it from the text file)"
    if not result["evidence"]:
        why = f"not found: {result['not_found_reason']}" if result["not_found"] else "no passage matched"
        return f"Evidence: none ({why})"
    lines = ["Evidence:"]
    for item in result["evidence"]:
        quote = " ".join(item["text"].split())
        if "document" in item:
            where = f"{item['document']} [{item['document_start']}-{item['document_end']}]"
        else:
            where = f"[{item['start']}-{item['end']}] block {item['block']}"
        where += f" (gate {item['gate_score']:.2f})"
        lines.append(f'  {where}: "{quote}"')
    return "\n".join(lines)


def _answer_origin(result: dict) -> str:
    """Why the answer is not the generated one, with what was generated (empty when it is)."""
    if not result.get("generated_answer"):
        return ""
    why = "not found" if result["not_found"] else "copied from the evidence"
    return f'  ({why}; the reasoner generated "{result["generated_answer"]}")'


def _trace_table(result: dict) -> str:
    """The per-block table of one answer: every block's gate score and decision, the working memory after it
    (whole: what the reasoner holds), and seconds; a last `answer` row, so the seconds add up to the call's."""
    columns = f"{'block':>6}  {'span':>13}  {'gate':>6}  {'kept':>4}  {'memory':>6}  {'decoded':>7}  {'seconds':>7}"
    header = columns + "  working memory after the block"
    lines = [header, "-" * len(header)]
    unscored = [r for r in result["trace"] if r["gate_decision"] == "not a candidate"]
    for r in result["trace"]:
        if r["gate_decision"] == "not a candidate":
            continue  # the first stage did not name it: nothing happened there (counted below)
        span = f"{r['span'][0]}-{r['span'][1]}"
        memory = r["memory"].replace("\n", " ") if r["kept"] else "(unchanged)"
        lines.append(
            f"{r['block']:>6}  {span:>13}  {r['gate_score']:>6.3f}  {'yes' if r['kept'] else 'no':>4}  "
            f"{r['memory_tokens']:>6}  {r['tokens_decoded']:>7}  {r['seconds']:>7.2f}  {memory}"
        )
    lines.append(
        f"{'answer':>6}  {'':>13}  {'':>6}  {'':>4}  {'':>6}  {result['answer_tokens']:>7}  "
        f"{result['answer_seconds']:>7.2f}  {result['answer']}{_answer_origin(result)}"
    )
    if unscored:
        lines.append(f"({len(unscored)} other blocks were not candidates of the first stage: never scored)")
    total = sum(r["seconds"] for r in result["trace"]) + result["answer_seconds"]
    lines.append(f"{'total':>6}  {'':>55}{total:>7.2f}  (the call took {result['seconds']:.2f} s)")
    return "\n".join(lines)
