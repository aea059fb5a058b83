"""Writing a bank block by block as a document is compressed (`model.compress(..., bank_dir=...)`,
`generate(context_ids=..., bank_dir=...)`): host memory holds one shard of blocks, whatever the document's length."""

import os
from pathlib import Path

from .bank_manifest_lychee import BANK_VERSION, Manifest, StorageFormat, write_manifest
from .bank_storage_lychee import ShardWriter
from .kv_quant_lychee import check_bank_dtype
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock, MemoryBankError

__all__ = ["LycheeBankWriter", "bank_writers", "check_bank_dir"]

# Shards of a bank written while it is compressed. Small, because host memory holds one while it is written and,
# while the bank is read, the pages of the few shards a reader keeps open (memory-mapped).
STREAMED_SHARD_BYTES = 8 * 2**20


class LycheeBankWriter:
    """Writes a new bank into a folder block by block, as the blocks are made: host memory holds one shard of
    them at most instead of the whole bank (`model.compress(..., bank_dir=...)`,
    `generate(context_ids=..., bank_dir=...)`).

    The folder is marked unfinished until `finish`, which writes the last shard and returns the bank reading from
    the folder lazily, as `LycheeMemoryBank.from_pretrained` does. A writer that stops early leaves an unfinished
    bank that readers refuse.

    Args:
        directory (`str` or `os.PathLike`): a new or empty folder.
        fingerprint (`dict`, *optional*): the `memory_fingerprint()` of the model making the blocks; may be given to
            `finish` instead (a quantized backbone's weights settle on their first use, so the model's fingerprint
            is taken once the blocks are made).
        bank_dtype (`str`, *optional*): the blocks' storage format (`"float32"`, `"float16"`, `"bfloat16"`,
            `"int8"`, `"int4"`; default: the first block's own, so the bank reads exactly as the blocks were made).
        max_shard_size (`int`): bytes per shard file.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        fingerprint: dict | None = None,
        bank_dtype: str | None = None,
        max_shard_size: int = STREAMED_SHARD_BYTES,
    ):
        self.directory = check_bank_dir(directory)
        self.bank_dtype = check_bank_dtype(bank_dtype) if bank_dtype is not None else None
        self.fingerprint, self.max_shard_size = dict(fingerprint or {}), max_shard_size
        self.manifest: Manifest | None = None
        self._shards: ShardWriter | None = None
        self._added = 0

    def add(self, block: LycheeMemoryBlock) -> None:
        """Appends the document's next block (in the bank's format; written out once a shard is full)."""
        if self._shards is None:
            self._start(self.bank_dtype or block.storage_dtype)
        self._shards.add(self._added, block)
        self._added += 1

    def finish(self, fingerprint: dict | None = None) -> LycheeMemoryBank:
        """Writes the last shard, records `fingerprint` (default: the one given at construction), marks the bank
        complete and returns it, reading from the folder."""
        if self._shards is None:
            raise MemoryBankError(f"No block was written to {self.directory}: a bank holds at least one block.")
        if fingerprint is not None:
            self.manifest.fingerprint = dict(fingerprint)
        if not self.manifest.fingerprint:
            raise ValueError("LycheeBankWriter.finish needs the model's memory_fingerprint() (none was given).")
        self._shards.flush()
        self.manifest.complete = True
        write_manifest(self.directory, self.manifest)
        return LycheeMemoryBank.from_pretrained(self.directory)

    def _start(self, bank_dtype: str) -> None:
        storage = StorageFormat.for_dtype(check_bank_dtype(bank_dtype))
        self.manifest = Manifest(BANK_VERSION, False, self.fingerprint, storage, None, 0, [], [])
        self.directory.mkdir(parents=True, exist_ok=True)
        write_manifest(self.directory, self.manifest)  # unfinished: readers refuse the folder until `finish`
        # The manifest is written once more, by `finish`: rewriting it per shard would cost O(blocks) each time.
        self._shards = ShardWriter(self.directory, self.manifest, self.max_shard_size, record_progress=False)


def check_bank_dir(bank_dir) -> Path:
    """`bank_dir` as a folder for a new bank: a path to a new or empty folder, else a `ValueError` naming the fix."""
    if not isinstance(bank_dir, (str, os.PathLike)):
        raise ValueError(
            f"bank_dir takes a folder path (str or os.PathLike), got {type(bank_dir).__name__} {bank_dir!r}: e.g. "
            "bank_dir=tempfile.mkdtemp(), or leave it out to keep the blocks in memory."
        )
    directory = Path(bank_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"bank_dir {directory} is a file: name a new or empty folder for the bank.")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(
            f"bank_dir {directory} is not empty: name a new or empty folder (nothing is overwritten); a bank saved "
            "there is read with bank=LycheeMemoryBank.from_pretrained(folder)."
        )
    return directory


def bank_writers(
    bank_dir, count: int, bank_dtype: str | None, fingerprint: dict | None = None
) -> list[LycheeBankWriter]:
    """One writer per document: `bank_dir` itself for one, `bank_dir/00000`, `bank_dir/00001`, ... for several (as
    `lychee-hf compress` numbers the banks of a .jsonl)."""
    directory = check_bank_dir(bank_dir)
    if count == 1:
        return [LycheeBankWriter(directory, fingerprint, bank_dtype)]
    return [LycheeBankWriter(directory / f"{index:05d}", fingerprint, bank_dtype) for index in range(count)]
