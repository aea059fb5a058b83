"""The document store: one folder holding every document's text and bank, and an index of who owns what.

    BANKS_DIR/index.json                  every document: id, owner, text hash, status, tokens, blocks (atomic writes)
    BANKS_DIR/documents/ID/source.txt     the uploaded text (what a resumed compression reads again)
    BANKS_DIR/documents/ID/bank/          its memory bank (complete only once every block is written)
    BANKS_DIR/documents/ID/.compress.lock held by the process compressing it

Ids are made here (`d_` + 16 hex digits), never from user text. Several server processes may share one store:
index updates take the index lock, and readers see the last complete index (it is replaced by one rename).
"""

import contextlib
import hashlib
import json
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import write_atomically
from ..modeling import LycheeMemoryBank, MemoryBankError
from .locks import exclusive

INDEX_FORMAT = "lychee-hf-documents"
ID_PATTERN = re.compile(r"d_[0-9a-f]{16}")
UNFINISHED = ("queued", "compressing")


class DocumentLimitReached(Exception):
    """The owner keeps as many documents (or as many bytes of banks) as the server allows."""


@dataclass
class DocumentRecord:
    """One document of the index.

    Attributes:
        id (`str`): the store's id.
        owner (`str`): who uploaded it (only they see it).
        sha256 (`str`): of its UTF-8 text (the same text uploaded again by the same owner is this document).
        status (`str`): `queued`, `compressing`, `ready` or `failed`.
        tokens (`int`): its length in tokens.
        blocks_total (`int`): blocks its bank will have.
        created (`float`): upload time (seconds since the epoch).
        name (`str`, *optional*): the uploaded file's name, for display only.
        error (`str`, *optional*): why compression failed.
    """

    id: str
    owner: str
    sha256: str
    status: str
    tokens: int
    blocks_total: int
    created: float
    name: str | None = None
    error: str | None = None

    def public(self, blocks_done: int) -> dict:
        """What the API shows (the owner is the caller)."""
        fields = asdict(self)
        del fields["owner"]
        return {**fields, "blocks_done": blocks_done}


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DocumentStore:
    """The documents under `root` (created if missing).

    Args:
        root (`str` or `Path`): the store folder (`--banks`).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "documents").mkdir(parents=True, exist_ok=True)
        self._index_path = self.root / "index.json"
        self._cache: tuple[tuple, dict[str, DocumentRecord]] | None = None

    # ------------------------------------------------------------------------------------------- reading
    def _records(self) -> dict[str, DocumentRecord]:
        """The index as last written (re-read only when the file changed)."""
        try:
            stat = self._index_path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cache is None or self._cache[0] != stamp:
            raw = json.loads(self._index_path.read_text(encoding="utf-8"))
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"{self._index_path} is not a {INDEX_FORMAT} index: point --banks at another folder")
            self._cache = (stamp, {r["id"]: DocumentRecord(**r) for r in raw["documents"]})
        return self._cache[1]

    def get(self, owner: str, document_id: str) -> DocumentRecord | None:
        """The owner's document `document_id`, or None (unknown, malformed, or another owner's)."""
        if not isinstance(document_id, str) or not ID_PATTERN.fullmatch(document_id):
            return None
        record = self._records().get(document_id)
        return record if record is not None and record.owner == owner else None

    def owned(self, owner: str) -> list[DocumentRecord]:
        return sorted((r for r in self._records().values() if r.owner == owner), key=lambda r: r.created)

    def find(self, owner: str, sha256: str) -> DocumentRecord | None:
        return next((r for r in self._records().values() if r.owner == owner and r.sha256 == sha256), None)

    def unfinished(self) -> list[str]:
        """Ids of the documents still to compress (queued, or cut short), oldest first."""
        records = sorted(self._records().values(), key=lambda r: r.created)
        return [r.id for r in records if r.status in UNFINISHED]

    def statuses(self) -> dict[str, int]:
        """How many documents have each status."""
        counts: dict[str, int] = {}
        for record in self._records().values():
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def exists(self, document_id: str) -> bool:
        return document_id in self._records()

    def record(self, document_id: str) -> DocumentRecord | None:
        return self._records().get(document_id)

    def folder(self, document_id: str) -> Path:
        if not ID_PATTERN.fullmatch(document_id):
            raise ValueError(f"{document_id!r} is not a document id")
        return self.root / "documents" / document_id

    def bank_dir(self, document_id: str) -> Path:
        return self.folder(document_id) / "bank"

    def source_text(self, document_id: str) -> str:
        return (self.folder(document_id) / "source.txt").read_text(encoding="utf-8")

    def blocks_done(self, record: DocumentRecord) -> int:
        """Blocks written so far (read from the bank's manifest while it is being written)."""
        if record.status == "ready":
            return record.blocks_total
        if record.status != "compressing":
            return 0
        try:
            return len(LycheeMemoryBank.from_pretrained(self.bank_dir(record.id), allow_incomplete=True))
        except (MemoryBankError, OSError, ValueError):
            return 0

    # ------------------------------------------------------------------------------------------- writing
    def _write(self, records: dict[str, DocumentRecord]) -> None:
        documents = [asdict(r) for r in sorted(records.values(), key=lambda r: r.created)]
        write_atomically(self._index_path, json.dumps({"format": INDEX_FORMAT, "version": 1, "documents": documents}))

    def add(
        self,
        owner: str,
        text: str,
        tokens: int,
        blocks_total: int,
        max_documents: int,
        name: str | None = None,
        disk: tuple[int, int] | None = None,
    ) -> tuple[DocumentRecord, bool]:
        """Adds a document (its text written first), or finds the owner's document of the same text.

        Returns:
            `(record, to_compress)`: `to_compress` is True for a new document, and for a failed one uploaded
            again (it is queued once more).

        Args:
            disk (`tuple[int, int]`, *optional*): (bytes one block of a bank takes, bytes of banks the owner may
                keep): a new document whose bank would pass the owner's allowance is refused.

        Raises:
            `DocumentLimitReached` when the owner already keeps `max_documents`, or its banks would pass `disk`.
        """
        sha = text_sha256(text)
        with exclusive(self.root / ".index.lock"):
            records = dict(self._records())
            same = next((r for r in records.values() if r.owner == owner and r.sha256 == sha), None)
            if same is not None:
                if same.status != "failed":
                    return same, False
                same.status, same.error = "queued", None
                self._write(records)
                return same, True
            if sum(1 for r in records.values() if r.owner == owner) >= max_documents:
                raise DocumentLimitReached(
                    f"this key keeps {max_documents} documents, the most the server allows: delete one first"
                )
            if disk is not None:
                check_disk_allowance([r for r in records.values() if r.owner == owner], blocks_total, *disk)
            record = DocumentRecord(
                f"d_{secrets.token_hex(8)}", owner, sha, "queued", tokens, blocks_total, time.time(), name
            )
            folder = self.folder(record.id)
            folder.mkdir(parents=True)
            write_atomically(folder / "source.txt", text)
            records[record.id] = record
            self._write(records)
            return record, True

    def update(self, document_id: str, **fields) -> DocumentRecord | None:
        """Changes fields of a document (None when it was deleted meanwhile)."""
        with exclusive(self.root / ".index.lock"):
            records = dict(self._records())
            record = records.get(document_id)
            if record is None:
                return None
            for key, value in fields.items():
                setattr(record, key, value)
            self._write(records)
            return record

    def delete(self, owner: str, document_id: str) -> bool:
        """Removes the owner's document from the index, and its folder unless a compression holds it (that
        compression then stops and removes it). False when the owner has no such document."""
        with exclusive(self.root / ".index.lock"):
            records = dict(self._records())
            record = records.get(document_id) if ID_PATTERN.fullmatch(document_id or "") else None
            if record is None or record.owner != owner:
                return False
            del records[document_id]
            self._write(records)
        with self.compression_lock(document_id) as held:
            if held:
                self.remove_folder(document_id)
        return True

    def remove_folder(self, document_id: str) -> None:
        shutil.rmtree(self.folder(document_id), ignore_errors=True)

    def compression_lock(self, document_id: str):
        """The document's compression lock, not waited for: yields whether this process holds it."""
        folder = self.folder(document_id)
        if not folder.is_dir():
            return contextlib.nullcontext(False)  # nothing left to compress
        return exclusive(folder / ".compress.lock", wait=False)

    def remove_orphans(self) -> None:
        """Removes document folders the index does not name (an upload or delete cut short), unless locked."""
        with exclusive(self.root / ".index.lock"):  # no upload is between its folder and its index entry
            for folder in (self.root / "documents").iterdir():
                if ID_PATTERN.fullmatch(folder.name) and not self.exists(folder.name):
                    with self.compression_lock(folder.name) as held:
                        if held:
                            self.remove_folder(folder.name)


def check_disk_allowance(owned: list[DocumentRecord], blocks: int, bytes_per_block: int, allowance: int) -> None:
    """Refuses a new document of `blocks` blocks when the owner's banks (`owned`) and its own would take more than
    `allowance` bytes."""
    held = sum(record.blocks_total for record in owned) * bytes_per_block
    wanted = blocks * bytes_per_block
    if held + wanted > allowance:
        raise DocumentLimitReached(
            f"this document's bank takes {wanted / 2**20:.1f} MiB; with the {held / 2**20:.1f} MiB this key's "
            f"documents hold, that passes the {allowance / 2**20:.1f} MiB of banks the server allows per key: delete "
            "documents first, or upload a shorter one"
        )
