"""Corpus compression: one memory bank per document of a JSONL corpus, split across processes, resumable.

    lychee-hf compress --corpus DOCS.jsonl --out BANKS_DIR                       # one process
    accelerate launch -m lychee_hf.cli compress --corpus DOCS.jsonl --out BANKS_DIR  # one per GPU / node

Each line of the corpus is a JSON object holding the document (`field`, default `context`) and optionally its id
(`id_field`, default `id`; the line number otherwise). Output folder:

    corpus.json              the manifest, written by the main process once every process finished: the model's
                             fingerprint and, per document in corpus order, its id, line, status (`ok` or
                             `failed`), bank folder, tokens, blocks, bytes and text SHA-256, or why it failed
                             (and, for what this run did, the process and seconds)
    <bank folder>/           one bank per document (`LycheeMemoryBank.from_pretrained`)
    .records/<folder>.json   per finished bank: what a rerun checks before skipping the document

Safety: a bank is written into `.partial-<folder>` next to its destination, loaded back with every block read
(checksums), and only then renamed into place; its record is written after the rename. An interrupted run
leaves a complete bank, no bank, or a `.partial-` folder (the next run removes it), never a half bank that looks
whole. A rerun skips a document whose record matches (same text, same model) and whose bank still verifies, and
compresses the rest. A document that cannot be compressed (not UTF-8, not JSON, empty, a duplicate id, too large
for the disk left, rejected by the model) is listed in the manifest with its reason; the others go on. Only one
run may write a folder at a time.
"""

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from ..bank_tools import compress_to_disk
from ..files import read_json_lines, write_json_atomically
from ..modeling import LycheeMemoryBank
from .distributed import distributed_state, gather_lists, process_progress

CORPUS_FORMAT = "lychee-corpus"
CORPUS_VERSION = 1
CORPUS_MANIFEST = "corpus.json"
RECORDS = ".records"
PARTIAL = ".partial-"
STALE = ".stale-"


@dataclass
class CorpusDocument:
    """One line of the corpus.

    Attributes:
        line (`int`): 1-based line number.
        id (`str`): the document id (the line number when the line names none).
        folder (`str`): the bank folder's name inside the output folder (derived from the id).
        text (`str`, *optional*): the document; `None` when the line cannot be used.
        error (`str`, *optional*): why the line cannot be used.
    """

    line: int
    id: str
    folder: str
    text: str | None = None
    error: str | None = None

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def read_corpus(
    path: str | Path, field: str = "context", id_field: str = "id", encoding: str = "utf-8"
) -> list[CorpusDocument]:
    """The documents of a JSONL corpus, one per non-blank line; unusable lines carry their reason in `error`.

    Raises:
        `FileNotFoundError` if the file is missing; `ValueError` for an unknown encoding or a file without lines.
    """
    documents, first_line = [], {}
    for line in read_json_lines(path, "corpus", encoding):
        raw_id = (line.record or {}).get(id_field)
        doc_id = str(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id).strip() else str(line.number)
        document = CorpusDocument(line.number, doc_id, "", error=line.error)
        text = (line.record or {}).get(field)
        if document.error is None:
            if not isinstance(text, str):
                document.error = f"no string field {field!r} (choose the field with --field)"
            elif not text.strip():
                document.error = "empty document"
            elif doc_id in first_line:
                document.error = f"duplicate id {doc_id!r} (first on line {first_line[doc_id]})"
            else:
                document.text = text
                first_line[doc_id] = line.number
        documents.append(document)
    _assign_folders([d for d in documents if d.error is None])
    return documents


def bank_folder_name(doc_id: str) -> str:
    """A folder name for a document id: the id itself when it is a safe file name, else a cleaned prefix of it
    plus a short hash of the whole id (so that two ids never share a folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", doc_id)[:80].lstrip(".")
    if safe == doc_id and safe:
        return safe
    return f"{safe or 'doc'}-{hashlib.sha256(doc_id.encode('utf-8')).hexdigest()[:10]}"


def _assign_folders(documents: list[CorpusDocument]) -> None:
    """Folder names, with a hash suffix where two would only differ in case (one folder on macOS/Windows)."""
    names = [bank_folder_name(d.id) for d in documents]
    lowered: dict[str, int] = {}
    for name in names:
        lowered[name.lower()] = lowered.get(name.lower(), 0) + 1
    for document, name in zip(documents, names):
        if lowered[name.lower()] > 1:
            name = f"{name}-{hashlib.sha256(document.id.encode('utf-8')).hexdigest()[:10]}"
        document.folder = name


@dataclass
class CorpusSummary:
    """What `compress_corpus` did.

    Attributes:
        documents (`int`): lines in the corpus.
        compressed (`int`), skipped (`int`): banks written by this run / found complete and verified.
        failed (`list[dict]`): manifest entries of the documents that failed (`id`, `line`, `reason`).
        tokens (`int`): tokens compressed by this run; seconds (`float`): its wall time for that.
        processes (`int`): processes that shared the work.
        manifest (`Path`): the corpus manifest.
    """

    documents: int
    compressed: int
    skipped: int
    failed: list[dict]
    tokens: int
    seconds: float
    processes: int
    manifest: Path

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        lines = [
            f"{self.documents} documents: {self.compressed} compressed, {self.skipped} already complete, "
            f"{len(self.failed)} failed",
            f"{self.tokens} tokens in {self.seconds:.1f} s ({self.tokens_per_second:.0f} tokens/s, "
            f"{self.processes} process{'es' if self.processes > 1 else ''})",
        ]
        lines += [f"failed: {entry['id']} (line {entry['line']}): {entry['reason']}" for entry in self.failed[:10]]
        if len(self.failed) > 10:
            lines.append(f"... and {len(self.failed) - 10} more (see {self.manifest})")
        lines.append(f"wrote {self.manifest}")
        return "\n".join(lines)


def compress_corpus(
    model,
    tokenizer,
    corpus: str | Path,
    out_dir: str | Path,
    field: str = "context",
    id_field: str = "id",
    state: PartialState | None = None,
    chunks_per_write: int = 8,
    show_progress: bool = True,
    encoding: str = "utf-8",
    bank_dtype: str | None = None,
) -> CorpusSummary:
    """Compresses every document of a JSONL corpus into its own bank under `out_dir`, resumably.

    Run it in every process of a launch (`accelerate launch`, `torchrun`): documents are split across the
    processes (`split_between_processes`), each writes its own banks, and the main process writes the manifest
    after all have finished. Put the model on `state.device` first (`place_model`).

    Args:
        model (`LycheeMemoryForCausalLM`): the model whose compressor writes the banks.
        tokenizer: its tokenizer.
        corpus (`str` or `Path`): JSONL, one document per line.
        out_dir (`str` or `Path`): a new or empty folder, or the folder of an earlier run with the same model
            (which is resumed).
        field (`str`): the field holding the document text.
        id_field (`str`): the field holding the document id (the line number when absent).
        state (`PartialState`, *optional*): the accelerate state (default: `distributed_state()`).
        chunks_per_write (`int`): chunks compressed and written per step (host memory stays flat per document).
        show_progress (`bool`): a progress bar per process, with tokens/s.
        encoding (`str`): the corpus's text encoding; a line that does not decode fails alone.
        bank_dtype (`str`, *optional*): storage format of the banks (default: float16 for float32 models, else the
            model's dtype).

    Returns:
        `CorpusSummary` (the same on every process).

    Raises:
        `FileExistsError` if `out_dir` holds anything but an earlier run's output; `ValueError` if that output was
        made by another model or settings.
    """
    state = state or distributed_state()
    out_dir = Path(out_dir)
    documents = read_corpus(corpus, field, id_field, encoding)
    fingerprint = model.memory_fingerprint()
    check_output_folder(out_dir, fingerprint)  # every process, before any collective call: all fail alike
    if state.is_main_process:
        (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()

    usable = [i for i, document in enumerate(documents) if document.error is None]
    with state.split_between_processes(usable) as mine:  # each process checks its share of earlier banks
        checked = [(i, finished_entry(documents[i], out_dir, fingerprint)) for i in mine]
    finished = dict(gather_lists(state, checked))
    todo = [i for i in usable if finished[i] is None]

    started = time.perf_counter()
    with state.split_between_processes(todo) as mine:
        progress = process_progress(state, len(mine), "compressing corpus", "doc", show_progress)
        results, tokens, seconds = [], 0, 0.0
        for i in mine:
            entry = compress_document(
                model, tokenizer, documents[i], out_dir, fingerprint, chunks_per_write, bank_dtype
            )
            results.append((i, {**entry, "process": state.process_index}))
            tokens, seconds = tokens + entry.get("tokens", 0), seconds + entry.get("seconds", 0.0)
            progress.update(1)
            progress.set_postfix(tokens_per_s=f"{tokens / seconds:.0f}" if seconds else "-")
        progress.close()
    written = dict(gather_lists(state, results))
    elapsed = time.perf_counter() - started

    entries = []
    for i, document in enumerate(documents):
        if document.error is not None:
            entries.append(_failure(document, document.error))
        else:
            entries.append(finished[i] or written[i])
    manifest = out_dir / CORPUS_MANIFEST
    if state.is_main_process:
        write_json_atomically(manifest, _manifest(entries, fingerprint, corpus, field, id_field))
        _sweep(out_dir)
    state.wait_for_everyone()
    return CorpusSummary(
        documents=len(documents),
        compressed=sum(1 for e in written.values() if e["status"] == "ok"),
        skipped=sum(1 for e in finished.values() if e is not None),
        failed=[e for e in entries if e["status"] == "failed"],
        tokens=sum(e.get("tokens", 0) for e in written.values() if e["status"] == "ok"),
        seconds=elapsed,
        processes=state.num_processes,
        manifest=manifest,
    )


def check_output_folder(out_dir: Path, fingerprint: dict) -> None:
    """Refuses a folder that holds anything but an earlier corpus run of this model (nothing is overwritten)."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    manifest, records = out_dir / CORPUS_MANIFEST, out_dir / RECORDS
    if not manifest.is_file() and not records.is_dir():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no corpus output ({CORPUS_MANIFEST}): choose a new folder for the "
            "banks (nothing is overwritten)"
        )
    fingerprints = [_read_json(manifest).get("fingerprint")] if manifest.is_file() else []
    fingerprints += [_read_json(path).get("fingerprint") for path in sorted(records.glob("*.json"))]
    if any(other not in (None, fingerprint) for other in fingerprints):
        raise ValueError(
            f"{out_dir} holds banks made by another model or settings: choose a new folder for this model's banks "
            "(nothing is overwritten)"
        )


def finished_entry(document: CorpusDocument, out_dir: Path, fingerprint: dict) -> dict | None:
    """The manifest entry of a document whose bank an earlier run completed (same text, same model, every block
    verified), or `None` when it needs compressing."""
    record = _read_json(out_dir / RECORDS / f"{document.folder}.json")
    same = (
        record.get("id") == document.id
        and record.get("text_sha256") == document.text_sha256
        and record.get("fingerprint") == fingerprint
    )
    if not same:
        return None
    try:
        verify_bank(out_dir / document.folder, record.get("tokens", -1), fingerprint)
    except (ValueError, OSError):  # MemoryBankError is a ValueError: missing, truncated or corrupted
        return None
    return _success(document, record, compressed=False)


def verify_bank(folder: Path, num_tokens: int, fingerprint: dict) -> LycheeMemoryBank:
    """Opens a bank and reads every block (checksums checked); raises `MemoryBankError` unless it is whole, made
    with `fingerprint`, and covers `num_tokens` tokens."""
    bank = LycheeMemoryBank.from_pretrained(folder)
    bank.check_compatible(fingerprint)
    if bank.num_tokens != num_tokens:
        raise ValueError(f"{folder} covers {bank.num_tokens} tokens, not {num_tokens}: it is incomplete")
    for index in range(len(bank)):
        bank.block(index)
    return bank


def compress_document(
    model,
    tokenizer,
    document: CorpusDocument,
    out_dir: Path,
    fingerprint: dict,
    chunks_per_write: int = 8,
    bank_dtype: str | None = None,
) -> dict:
    """Compresses one document into `.partial-<folder>`, verifies it, renames it into place and records it.

    Returns:
        `dict`: the manifest entry (`status` `ok`, or `failed` with the reason; a failure leaves no folder).
    """
    partial = out_dir / f"{PARTIAL}{document.folder}"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    started = time.perf_counter()
    try:
        ids = tokenizer.encode(document.text, add_special_tokens=False)
        if not ids:
            return _failure(document, "empty after tokenization")
        compress_to_disk(
            model,
            torch.tensor(ids),
            partial,
            chunks_per_write=chunks_per_write,
            show_progress=False,
            bank_dtype=bank_dtype,
        )
        bank = verify_bank(partial, len(ids), fingerprint)
    except (ValueError, OSError, RuntimeError) as error:  # this document only: the others go on
        shutil.rmtree(partial, ignore_errors=True)
        return _failure(document, str(error) or type(error).__name__)
    record = {
        "id": document.id,
        "folder": document.folder,
        "text_sha256": document.text_sha256,
        "tokens": len(ids),
        "blocks": len(bank),
        "bytes": sum(p.stat().st_size for p in partial.rglob("*") if p.is_file()),
        "fingerprint": fingerprint,
    }
    _move_into_place(partial, out_dir, document.folder)
    write_json_atomically(out_dir / RECORDS / f"{document.folder}.json", record)
    return _success(document, record, compressed=True, seconds=time.perf_counter() - started)


def _move_into_place(partial: Path, out_dir: Path, folder: str) -> None:
    """Renames a verified bank to its folder; an older bank there (whose record no longer matches) goes first,
    record before folder, so no record ever names a bank it does not describe."""
    (out_dir / RECORDS / f"{folder}.json").unlink(missing_ok=True)
    final, stale = out_dir / folder, out_dir / f"{STALE}{folder}"
    if final.exists():
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
    partial.rename(final)
    shutil.rmtree(stale, ignore_errors=True)


def _sweep(out_dir: Path) -> None:
    """Removes `.partial-` / `.stale-` folders of documents no longer in the corpus (main process, at the end)."""
    for path in out_dir.iterdir():
        if path.is_dir() and path.name.startswith((PARTIAL, STALE)):
            shutil.rmtree(path, ignore_errors=True)


def _success(document: CorpusDocument, record: dict, compressed: bool, seconds: float = 0.0) -> dict:
    entry = {"id": document.id, "line": document.line, "status": "ok", "bank": document.folder}
    entry.update({key: record[key] for key in ("tokens", "blocks", "bytes", "text_sha256")})
    entry["compressed_now"] = compressed
    if compressed:
        entry["seconds"] = round(seconds, 3)
    return entry


def _failure(document: CorpusDocument, reason: str) -> dict:
    return {"id": document.id, "line": document.line, "status": "failed", "reason": reason}


def _manifest(entries: list[dict], fingerprint: dict, corpus, field: str, id_field: str) -> dict:
    ok = [e for e in entries if e["status"] == "ok"]
    return {
        "format": CORPUS_FORMAT,
        "version": CORPUS_VERSION,
        "source": str(corpus),
        "field": field,
        "id_field": id_field,
        "fingerprint": fingerprint,
        "documents": len(entries),
        "ok": len(ok),
        "failed": len(entries) - len(ok),
        "tokens": sum(e["tokens"] for e in ok),
        "entries": entries,
    }


def _read_json(path: Path) -> dict:
    """A JSON object from `path`, or `{}` when it is missing or unreadable (then it counts as absent)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_corpus_manifest(out_dir: str | Path) -> dict:
    """The manifest of a compressed corpus.

    Raises:
        `FileNotFoundError` if `out_dir` holds no `corpus.json`; `ValueError` if it is not a corpus manifest.
    """
    path = Path(out_dir) / CORPUS_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no compressed corpus ({CORPUS_MANIFEST} not found)")
    manifest = _read_json(path)
    if manifest.get("format") != CORPUS_FORMAT or manifest.get("version") != CORPUS_VERSION:
        raise ValueError(f"{path} is not a {CORPUS_FORMAT} v{CORPUS_VERSION} manifest: compress the corpus again")
    return manifest


__all__ = [
    "CorpusDocument",
    "CorpusSummary",
    "compress_corpus",
    "read_corpus",
    "read_corpus_manifest",
    "verify_bank",
]
