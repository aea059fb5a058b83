"""Corpus compression: one memory bank per document of a JSONL corpus, split across processes, resumable.

    lychee-hf compress --corpus DOCS.jsonl --out BANKS_DIR                       # one process
    accelerate launch -m lychee_hf.cli compress --corpus DOCS.jsonl --out BANKS_DIR  # one per GPU / node

Each line of the corpus is a JSON object holding the document (`field`, default `context`) and its id: a string as
given, or a number as its JSON text (`1.5` -> "1.5"). Without `id_field`, a line's `id` field when it has one and its
line number otherwise; with `id_field`, every line must have that field. Output folder (`corpus_folder.py`):

    corpus.json              the manifest, written by the main process once every process finished: the model's
                             fingerprint and, per document in corpus order, its id, line, status (`ok` or
                             `failed`), bank folder, tokens, blocks, bytes and text SHA-256, or why it failed
                             (and, for what this run did, the process and seconds)
    <bank folder>/           one bank per document (`LycheeMemoryBank.from_pretrained`), named after its id
    .records/<folder>.json   per finished bank: what a rerun checks before skipping the document
    .lock                    held by the run writing the folder (one at a time; released when its process ends)

Safety: a bank is written into `.partial-<folder>` next to its destination, loaded back with every block read
(checksums), and only then renamed into place; its record is written after the rename. An interrupted run
leaves a complete bank, no bank, or a `.partial-` folder (the next run removes it), never a half bank that looks
whole. A rerun skips a document whose record matches (same text, same model) and whose bank still verifies, and
compresses the rest (`overwrite` compresses every document again, replacing its bank). A document that cannot be
compressed (not UTF-8, not JSON, empty, a bad or duplicate id, too large for the disk left, rejected by the model)
is listed in the manifest with its reason; the others go on. Only one run may write a folder at a time: a second
one is refused at once, naming the process that holds the folder's lock.
"""

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState

from ..bank_tools import compress_to_disk
from ..files import FolderLockedError, folder_lock, read_json_lines, write_json_atomically
from ..modeling import LycheeMemoryBank
from ..text_banks import encode_document
from .corpus_bank import write_corpus_index
from .corpus_folder import (
    CORPUS_MANIFEST,
    LOCK,
    PARTIAL,
    RECORDS,
    bank_folder_name,
    check_output_folder,
    corpus_manifest,
    move_into_place,
    read_corpus_manifest,
    read_json_object,
    retire_reserved_folders,
    sweep,
)
from .distributed import distributed_state, gather_lists, process_progress


@dataclass
class CorpusDocument:
    """One line of the corpus.

    Attributes:
        line (`int`): 1-based line number.
        id (`str`): the document id (the line number when the line names none or cannot be used).
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
    path: str | Path, field: str = "context", id_field: str | None = None, encoding: str = "utf-8"
) -> list[CorpusDocument]:
    """The documents of a JSONL corpus, one per non-blank line; unusable lines carry their reason in `error`.

    Args:
        id_field (`str`, *optional*): the field every line names its id in; without it, a line's `id` field when it
            has one, its line number otherwise.

    Raises:
        `FileNotFoundError` if the file is missing; `IsADirectoryError` for a folder; `ValueError` for an unknown
        encoding, a file without lines, or an `id_field` that no line has.
    """
    lines = read_json_lines(path, "corpus", encoding)
    if id_field is not None and not any(line.record and id_field in line.record for line in lines):
        first = next((line.record for line in lines if line.record), {})
        raise ValueError(
            f"no line of {path} has the id field {id_field!r} (--id-field); its first object's fields are "
            f"{', '.join(map(repr, first)) or 'none'}"
        )
    documents, first_line, numbered = [], {}, set()  # numbered: lines named by their number (no id field)
    for line in lines:
        record = line.record or {}
        doc_id, id_error = _document_id(record, id_field, line.number)
        if (id_field or "id") not in record:
            numbered.add(line.number)
        document = CorpusDocument(line.number, doc_id, "", error=line.error or id_error)
        text = record.get(field)
        if document.error is None:
            if not isinstance(text, str):
                document.error = f"no string field {field!r} (choose the field with --field)"
            elif not text.strip():
                document.error = "empty document"
            elif doc_id in first_line:
                document.error = _duplicate(doc_id, line.number, first_line[doc_id], numbered)
            else:
                document.text = text
                first_line[doc_id] = line.number
        documents.append(document)
    _assign_folders([d for d in documents if d.error is None])
    return documents


def id_text(value) -> str | None:
    """A document id as text: a string as given, a number as its JSON text (`1.5` -> "1.5", `7` -> "7"); `None` for
    anything else (null, true/false, a list, an object)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    return None


def _document_id(record: dict, id_field: str | None, number: int) -> tuple[str, str | None]:
    """A line's id and, when it cannot be used, why (the line number stands in for the id then)."""
    name = id_field or "id"
    if name not in record:
        return str(number), None if id_field is None else f"no id field {id_field!r} (other lines have one)"
    value = record[name]
    text = id_text(value)
    if text is None:
        return str(number), f"id {json.dumps(value)[:40]} is not a string or a number"
    if not text.strip():
        return str(number), f"empty id {text!r}"
    return text, None


def _duplicate(doc_id: str, line: int, first: int, numbered: set[int]) -> str:
    """Why a line's id is refused, saying which of the two lines has no id and is named by its number."""
    notes = [f"line {n} has no id and is named by its number" for n in (first, line) if n in numbered]
    return f"duplicate id {doc_id!r} (first on line {first}{''.join('; ' + note for note in notes)})"


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

    @property
    def usable(self) -> int:
        """Documents with a complete bank after this run (compressed now or before)."""
        return self.documents - len(self.failed)

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
        if self.failed and self.usable:
            lines.append(f"{len(self.failed)} of {self.documents} failed; the other {self.usable} can be asked")
        lines.append(f"wrote {self.manifest}")
        return "\n".join(lines)


def compress_corpus(
    model,
    tokenizer,
    corpus: str | Path,
    out_dir: str | Path,
    field: str = "context",
    id_field: str | None = None,
    state: PartialState | None = None,
    chunks_per_write: int = 8,
    show_progress: bool = True,
    encoding: str = "utf-8",
    bank_dtype: str | None = None,
    overwrite: bool = False,
) -> CorpusSummary:
    """Compresses every document of a JSONL corpus into its own bank under `out_dir`, resumably.

    Run it in every process of a launch (`accelerate launch`, `torchrun`): documents are split across the
    processes (`split_between_processes`), each writes its own banks, and the main process writes the manifest
    after all have finished. Put the model on `state.device` first (`place_model`). The main process holds the
    folder's lock (`.lock`) for the whole run: a second run into the same folder is refused at once.

    Args:
        model (`LycheeMemoryForCausalLM`): the model whose compressor writes the banks.
        tokenizer: its tokenizer.
        corpus (`str` or `Path`): JSONL, one document per line.
        out_dir (`str` or `Path`): a new or empty folder, or the folder of an earlier run with the same model
            (which is resumed).
        field (`str`): the field holding the document text.
        id_field (`str`, *optional*): the field holding every document's id (default: `id` where a line has it,
            the line number otherwise).
        state (`PartialState`, *optional*): the accelerate state (default: `distributed_state()`).
        chunks_per_write (`int`): chunks compressed and written per step (host memory stays flat per document).
        show_progress (`bool`): a progress bar per process, with tokens/s.
        encoding (`str`): the corpus's text encoding; a line that does not decode fails alone.
        bank_dtype (`str`, *optional*): storage format of the banks (default: float16 for float32 models, else the
            model's dtype).
        overwrite (`bool`): compress every document again, replacing the banks of an earlier run (each one only
            once its new bank is verified), instead of skipping those that are complete.

    Returns:
        `CorpusSummary` (the same on every process).

    Raises:
        `FileExistsError` if `out_dir` holds anything but an earlier run's output; `ValueError` if that output was
        made by another model or settings; `FolderLockedError` if another run is writing `out_dir`.
    """
    state = state or distributed_state()
    out_dir = Path(out_dir)
    documents = read_corpus(corpus, field, id_field, encoding)
    fingerprint = model.memory_fingerprint()
    check_output_folder(out_dir, fingerprint)  # every process, before any collective call: all fail alike
    with _one_writer(out_dir, state):
        if state.is_main_process:
            (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
            retire_reserved_folders(out_dir)
        state.wait_for_everyone()
        usable = [i for i, document in enumerate(documents) if document.error is None]
        if overwrite:
            finished = dict.fromkeys(usable)
        else:
            finished = _finished_entries(documents, usable, out_dir, fingerprint, state)
        todo = [i for i in usable if finished[i] is None]
        started = time.perf_counter()
        settings = dict(chunks_per_write=chunks_per_write, bank_dtype=bank_dtype)
        written = _compress_share(
            model, tokenizer, documents, todo, out_dir, fingerprint, state, show_progress, **settings
        )
        elapsed = time.perf_counter() - started
        entries = [_failure(d, d.error) if d.error else finished[i] or written[i] for i, d in enumerate(documents)]
        manifest = out_dir / CORPUS_MANIFEST
        if state.is_main_process:
            write_json_atomically(manifest, corpus_manifest(entries, fingerprint, corpus, field, id_field))
            sweep(out_dir)
            write_corpus_index(out_dir)  # questions over the whole corpus find their blocks through it
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


@contextlib.contextmanager
def _one_writer(out_dir: Path, state: PartialState):
    """The lock of `out_dir`, held by the main process for the whole run (the other processes of the launch write
    under it); when another run holds it, every process of this one raises the same `FolderLockedError`."""
    with contextlib.ExitStack() as held:
        refused = None
        if state.is_main_process:
            try:
                held.enter_context(folder_lock(out_dir, LOCK))
            except FolderLockedError as error:
                refused = str(error)
        refused = gather_lists(state, [refused])[0]  # the main process's answer, on every process
        if refused:
            raise FolderLockedError(refused)
        yield


def _finished_entries(documents: list, usable: list[int], out_dir: Path, fingerprint: dict, state) -> dict:
    """Document index -> its manifest entry when an earlier run completed its bank, else `None`; each process
    verifies its share of the banks."""
    with state.split_between_processes(usable) as mine:
        checked = [(i, finished_entry(documents[i], out_dir, fingerprint)) for i in mine]
    return dict(gather_lists(state, checked))


def _compress_share(
    model,
    tokenizer,
    documents: list,
    todo: list[int],
    out_dir: Path,
    fingerprint: dict,
    state,
    show_progress,
    **settings,
) -> dict:
    """Compresses this process's share of `todo` (`settings`: `compress_document`'s); document index -> manifest
    entry for every document of `todo`, on every process."""
    with state.split_between_processes(todo) as mine:
        progress = process_progress(state, len(mine), "compressing corpus", "doc", show_progress)
        results, tokens, seconds = [], 0, 0.0
        for i in mine:
            entry = compress_document(model, tokenizer, documents[i], out_dir, fingerprint, **settings)
            results.append((i, {**entry, "process": state.process_index}))
            tokens, seconds = tokens + entry.get("tokens", 0), seconds + entry.get("seconds", 0.0)
            progress.update(1)
            progress.set_postfix(tokens_per_s=f"{tokens / seconds:.0f}" if seconds else "-")
        progress.close()
    return dict(gather_lists(state, results))


def finished_entry(document: CorpusDocument, out_dir: Path, fingerprint: dict) -> dict | None:
    """The manifest entry of a document whose bank an earlier run completed (same text, same model, every block
    verified), or `None` when it needs compressing."""
    record = read_json_object(out_dir / RECORDS / f"{document.folder}.json")
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
        try:  # the text is kept with the bank: evidence, and the corpus index, read it
            encoded, text = encode_document(tokenizer, document.text, model.config.chunk_size)
        except ValueError:
            return _failure(document, "empty after tokenization")
        ids = encoded[0].tolist()
        compress_to_disk(
            model,
            encoded[0],
            partial,
            chunks_per_write=chunks_per_write,
            show_progress=False,
            bank_dtype=bank_dtype,
            text=text,
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
    move_into_place(partial, out_dir, document.folder)
    write_json_atomically(out_dir / RECORDS / f"{document.folder}.json", record)
    return _success(document, record, compressed=True, seconds=time.perf_counter() - started)


def _success(document: CorpusDocument, record: dict, compressed: bool, seconds: float = 0.0) -> dict:
    entry = {"id": document.id, "line": document.line, "status": "ok", "bank": document.folder}
    entry.update({key: record[key] for key in ("tokens", "blocks", "bytes", "text_sha256")})
    entry["compressed_now"] = compressed
    if compressed:
        entry["seconds"] = round(seconds, 3)
    return entry


def _failure(document: CorpusDocument, reason: str) -> dict:
    return {"id": document.id, "line": document.line, "status": "failed", "reason": reason}


__all__ = [
    "CORPUS_MANIFEST",
    "CorpusDocument",
    "CorpusSummary",
    "bank_folder_name",
    "compress_corpus",
    "read_corpus",
    "read_corpus_manifest",
    "verify_bank",
]
