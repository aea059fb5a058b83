"""The compressed document: one K/V block per chunk, plus what made it. Data only, never model state.

A bank lives in memory, on disk, or both: a saved bank (`save_pretrained`, format in `bank_storage_lychee.py`) is
read back lazily, one block per access out of memory-mapped shards, so a bank far larger than the accelerator (or
host memory) streams through the reasoner. Blocks may be stored in a smaller format than the model computes in
(`bank_dtype`: float16, bfloat16, int8 or int4, see `kv_quant_lychee.py`); they are dequantized layer by layer on
each layer's device as the reasoner reads them (`LycheeMemoryBlock.layer`), never as a whole bank. Writing one as
it is compressed: `bank_writer_lychee.py`."""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .bank_manifest_lychee import (
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    BlockRecord,
    Manifest,
    MemoryBankError,
    StorageFormat,
    read_manifest,
    write_manifest,
)
from .bank_storage_lychee import ShardReader, ShardWriter, check_files, decode_block
from .bank_text_lychee import DocumentText, DocumentTextError, read_text, write_text
from .kv_quant_lychee import FLOAT_STORAGE, QuantizedKV, check_bank_dtype, default_bank_dtype, quantize

__all__ = ["LycheeMemoryBank", "LycheeMemoryBlock", "MemoryBankError", "MANIFEST_NAME"]


@dataclass
class LycheeMemoryBlock:
    """One chunk's K/V as the reasoner reads it.

    Attributes:
        keys (`torch.Tensor` or `QuantizedKV`): (num_layers, num_kv_heads, slots, head_dim), before rotary
            embedding; a `QuantizedKV` in an int8/int4 bank.
        values (`torch.Tensor` or `QuantizedKV`): same shape as `keys`.
        mask (`torch.BoolTensor`): (slots,), True where the slot summarises at least one real token.
        span (`tuple[int, int]`): the chunk's [start, end) in the document's (unpadded) token ids.
    """

    keys: torch.Tensor | QuantizedKV
    values: torch.Tensor | QuantizedKV
    mask: torch.Tensor
    span: tuple[int, int]

    @property
    def num_slots(self) -> int:
        return self.mask.shape[0]

    @property
    def storage_dtype(self) -> str:
        """`"int8"` / `"int4"` (the values' bits) for quantized K/V, else the tensors' dtype name (`"float16"`...)."""
        if isinstance(self.values, QuantizedKV):
            return f"int{self.values.bits}"
        return str(self.keys.dtype).replace("torch.", "")

    def layer(self, index: int, device: torch.device | str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s (keys, values), each (H, S, D), in `dtype` on `device` (dequantized there if needed)."""
        return _layer(self.keys, index, device, dtype), _layer(self.values, index, device, dtype)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "LycheeMemoryBlock":
        """The block on `device`; with `dtype`, as plain tensors of that dtype (dequantized if needed)."""
        return LycheeMemoryBlock(
            keys=_moved(self.keys, device, dtype),
            values=_moved(self.values, device, dtype),
            mask=self.mask.to(device=device),
            span=self.span,
        )

    def shifted(self, offset: int) -> "LycheeMemoryBlock":
        return LycheeMemoryBlock(self.keys, self.values, self.mask, (self.span[0] + offset, self.span[1] + offset))

    def astype(self, storage: "StorageFormat | str") -> "LycheeMemoryBlock":
        """The block in storage format `storage` (a `bank_dtype` name or a `StorageFormat`); itself if already so.

        Raises:
            `MemoryBankError`: when the K/V do not fit the format's range (float16 past 65504).
        """
        storage = StorageFormat.for_dtype(check_bank_dtype(storage)) if isinstance(storage, str) else storage
        keys = _encoded(self.keys, storage, "keys", self.mask)
        values = _encoded(self.values, storage, "values", self.mask)
        return LycheeMemoryBlock(keys, values, self.mask, self.span)


def chunk_spans(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """The [start, end) token spans of a `length`-token document cut into `chunk_size` chunks: one block each."""
    return [(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def _layer(kv, index: int, device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(kv, QuantizedKV):
        return kv.layer(index, device, dtype)
    return kv[index].to(device=device, dtype=dtype)


def _moved(kv, device, dtype: torch.dtype | None):
    if isinstance(kv, QuantizedKV):
        return kv.dequantize(device, dtype) if dtype is not None else kv.to(device)
    return kv.to(device=device, dtype=dtype)


def _encoded(kv, storage: StorageFormat, part_name: str, mask: torch.Tensor):
    """`kv` (a tensor or `QuantizedKV`) in `storage`'s format for part `"keys"` or `"values"`."""
    part = storage.part(part_name)
    if isinstance(kv, QuantizedKV):
        layout = (kv.bits, kv.group_size, kv.per_channel, kv.rotation, kv.outliers)
        wanted = (part["bits"], part["group_size"], part["per_channel"], part["rotation"], part["outliers"])
        if layout == wanted:
            return kv
        kv = kv.dequantize()
    if storage.bits is not None:
        return quantize(
            kv, part["bits"], part["group_size"], part["per_channel"], mask, part["rotation"], part["outliers"]
        )
    target = FLOAT_STORAGE[storage.dtype]
    if kv.dtype == target:
        return kv
    stored = kv.detach().to(target)
    if target != torch.float32 and not bool(torch.isfinite(stored).all()) and bool(torch.isfinite(kv).all()):
        raise MemoryBankError(
            f"This block's K/V reach {float(kv.abs().max()):.4g}, beyond {storage.dtype}'s range: store the bank as "
            "bfloat16 or int8 (--bank-dtype)."
        )
    return stored


@dataclass
class _DiskBlock:
    """A saved block: where it lives, how it is stored, how to check it."""

    record: BlockRecord
    reader: ShardReader
    storage: StorageFormat
    shape: tuple[int, ...]
    offset: int = 0  # added to the stored span (a bank appended after another)

    @property
    def span(self) -> tuple[int, int]:
        return (self.record.span[0] + self.offset, self.record.span[1] + self.offset)


class LycheeMemoryBank:
    """A document compressed once, to answer many questions (`model.generate(input_ids=..., memory=bank)`).

    Args:
        blocks (`list[LycheeMemoryBlock]`, *optional*): in document order.
        fingerprint (`dict`, *optional*): the model settings that made the blocks; a model reads only banks whose
            fingerprint equals its own `memory_fingerprint()`.
        bank_dtype (`str`, *optional*): the storage format of `blocks` (`None`: as the model computed them).

    Attributes:
        complete (`bool`): False for a saved bank whose writing has not finished (an interrupted `compress`).
        document (`dict`, *optional*): `{"num_tokens", "sha256"}` of the whole document, when the writer knew it
            (`compress_to_disk`); what `compress --resume` checks before continuing.
        document_text (`DocumentText`, *optional*): the document's text and each block's characters, when the
            bank keeps them (`attach_text`; saved as `document.txt`): what answers quote as evidence.
    """

    def __init__(
        self,
        blocks: list[LycheeMemoryBlock] | None = None,
        fingerprint: dict | None = None,
        bank_dtype: str | None = None,
    ):
        self._entries: list[LycheeMemoryBlock | _DiskBlock] = list(blocks or [])
        self.fingerprint = dict(fingerprint or {})
        self.bank_dtype = check_bank_dtype(bank_dtype) if bank_dtype is not None else None
        self.complete = True
        self.document: dict | None = None
        self._verify = True
        self._text: DocumentText | None = None
        self._text_source: tuple[Path, dict] | None = None  # (folder, record) of a saved bank's text, read lazily

    # ----------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        on_disk = sum(isinstance(e, _DiskBlock) for e in self._entries)
        return (
            f"LycheeMemoryBank(blocks={len(self)}, tokens={self.num_tokens}, on_disk={on_disk}, "
            f"bank_dtype={self.bank_dtype}, complete={self.complete})"
        )

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [entry.span for entry in self._entries]

    @property
    def num_tokens(self) -> int:
        """Document tokens the bank covers."""
        return self._entries[-1].span[1] if self._entries else 0

    def attach_text(self, text: str, chars: list[tuple[int, int]]) -> None:
        """Keeps the document's text with the bank, so answers can quote it (evidence).

        Args:
            text (`str`): the whole document, exactly as it was tokenized.
            chars (`list[tuple[int, int]]`): per block, the `[start, end)` characters its tokens came from (see
                `bank_text_lychee.chunk_char_spans` over a fast tokenizer's `return_offsets_mapping`).

        Raises:
            `DocumentTextError`: when the spans do not fit the text or their number is not the bank's.
        """
        if len(chars) != len(self):
            raise DocumentTextError(f"{len(chars)} character spans for a bank of {len(self)} blocks.")
        self._text, self._text_source = DocumentText(text, tuple(tuple(span) for span in chars)), None

    @property
    def document_text(self) -> DocumentText | None:
        """The document's text and per-block characters, or None when the bank does not keep them (a bank made
        from token ids alone, or saved before evidence existed). A saved bank reads `document.txt` on first use."""
        if self._text is None and self._text_source is not None:
            directory, record = self._text_source
            try:
                self._text = read_text(directory, record)
            except DocumentTextError as error:
                warnings.warn(f"{error} Answers come without evidence.", UserWarning, stacklevel=2)
                self._text_source = None
        if self._text is not None and len(self._text.chars) < len(self):
            return None  # the text covers fewer blocks than the bank holds (an append without text)
        return self._text

    def block(self, index: int) -> LycheeMemoryBlock:
        """Block `index`, read from disk (and checked) if it lives there; nothing is cached."""
        entry = self._entries[index]
        return entry if isinstance(entry, LycheeMemoryBlock) else self._read(entry)

    @property
    def blocks(self) -> list[LycheeMemoryBlock]:
        """Every block, loaded (for a disk bank this reads the whole bank: prefer `block(i)`)."""
        return [self.block(i) for i in range(len(self))]

    def stored_files(self) -> list[Path]:
        """The shard (or version-1 block) files this bank's saved blocks are read from, in order."""
        paths = [entry.reader.directory / entry.record.file for entry in self._entries if isinstance(entry, _DiskBlock)]
        return list(dict.fromkeys(paths))

    def astype(self, bank_dtype: "str | StorageFormat") -> "LycheeMemoryBank":
        """An in-memory copy with every block in storage format `bank_dtype` (a name or a `StorageFormat`; reads
        every block; to rewrite a large saved bank on disk, use `lychee_hf.bank_tools.convert_bank`)."""
        if isinstance(bank_dtype, StorageFormat):
            storage, bank_dtype = bank_dtype, bank_dtype.dtype
        else:
            storage = StorageFormat.for_dtype(check_bank_dtype(bank_dtype))
        bank = LycheeMemoryBank([self.block(i).astype(storage) for i in range(len(self))], self.fingerprint, bank_dtype)
        bank.document = self.document
        bank._text, bank._text_source = self._text, self._text_source
        return bank

    def close(self) -> None:
        """Closes the shard files a saved bank holds open (before its folder is deleted; reading reopens them)."""
        readers = {id(entry.reader): entry.reader for entry in self._entries if isinstance(entry, _DiskBlock)}
        for reader in readers.values():
            reader.close()

    def verify(self) -> int:
        """Reads every block and checks it against its checksum; returns the number of blocks checked.

        Raises:
            `MemoryBankError`: naming the first block that is missing, truncated or corrupted.
        """
        verify, self._verify = self._verify, True
        try:
            for index in range(len(self)):
                self.block(index)
        finally:
            self._verify = verify
        return len(self)

    def append(self, other: "LycheeMemoryBank") -> None:
        """Adds the blocks of `other` (the document's continuation, compressed by the same model) at the end."""
        if self._entries and other.fingerprint != self.fingerprint:
            raise MemoryBankError(
                "Cannot append a bank made with other settings (differs in: "
                + ", ".join(_differing_keys(self.fingerprint, other.fingerprint))
                + ")."
            )
        if not self.fingerprint:
            self.fingerprint = dict(other.fingerprint)
        if not self._entries:
            self.bank_dtype = other.bank_dtype
        elif other.bank_dtype != self.bank_dtype:
            self.bank_dtype = None  # mixed formats in memory; saving writes one
        if self._entries:  # the text described the old blocks only; a saved bank keeps its folder's record
            self._text = self._text_source = None
        else:
            self._text, self._text_source = other._text, other._text_source
        offset = self.num_tokens
        for entry in other._entries:
            if isinstance(entry, _DiskBlock):
                moved = _DiskBlock(entry.record, entry.reader, entry.storage, entry.shape, entry.offset + offset)
                self._entries.append(moved)
            else:
                self._entries.append(entry.shifted(offset))

    def check_compatible(self, expected_fingerprint: dict) -> None:
        """Raises `MemoryBankError` naming every setting in which this bank differs from `expected_fingerprint`."""
        if "weights_digest_version" in expected_fingerprint and "weights_digest_version" not in self.fingerprint:
            raise MemoryBankError(
                "This memory bank was written by an older lychee-hf whose fingerprint hashed only five weight tensors, "
                "so it cannot be checked against this model: recompress the document with this model "
                "(`lychee-hf compress`)."
            )
        differing = [
            f"{key}: bank has {self.fingerprint.get(key)!r}, model has {expected_fingerprint.get(key)!r}"
            for key in _differing_keys(self.fingerprint, expected_fingerprint)
        ]
        if differing:
            raise MemoryBankError(
                "This memory bank was made by a different model or settings; recompress the document with this "
                "model. Differences: " + "; ".join(differing)
            )

    # ----------------------------------------------------------------------------------------- disk
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        bank_dtype: "str | StorageFormat | None" = None,
        max_shard_size: int = DEFAULT_MAX_SHARD_BYTES,
        complete: bool = True,
    ) -> None:
        """Writes the bank as safetensors shards + `bank.json`.

        Saving into the folder this bank was loaded from (or a folder holding a prefix of it) writes only the new
        blocks, into new shards, so a growing document is appended in place. A folder holding anything else is
        refused, never overwritten. While blocks are written the manifest says `complete: false`; readers refuse
        the bank until the last manifest says `true`.

        Args:
            save_directory (`str` or `os.PathLike`): a new or empty folder, or this bank's own.
            bank_dtype (`str` or `StorageFormat`, *optional*): `"float32"`, `"float16"`, `"bfloat16"`, `"int8"` or
                `"int4"`, or a `StorageFormat` for other quantization groups or rotation (default: the format of a
                folder being extended, else this bank's `bank_dtype`, else float16 for float32 models and the
                model's dtype otherwise). Quantized blocks already in the requested dtype keep their own layout
                (an int4 bank from an older release is copied, not quantized twice).
            max_shard_size (`int`): bytes per shard file (a block larger than this gets a shard of its own).
            complete (`bool`): False leaves the bank marked unfinished (more blocks follow).
        """
        self._check_spans()
        directory = Path(save_directory)
        manifest = self._existing_manifest(directory)
        if manifest is not None:
            wanted = bank_dtype.dtype if isinstance(bank_dtype, StorageFormat) else bank_dtype
            if wanted is not None and wanted != manifest.storage.dtype:
                raise MemoryBankError(
                    f"{directory} stores {manifest.storage.dtype} blocks, not {wanted}: append in its format "
                    "(or rewrite it with `lychee-hf bank convert`)."
                )
        else:
            storage = self._storage_for(bank_dtype)
            manifest = Manifest(2, False, self.fingerprint, storage, None, 0, [], [], self.document)
            directory.mkdir(parents=True, exist_ok=True)
            if self.document_text is not None:
                write_text(directory, self.document_text)
                manifest.text = self.document_text.record()
        # Extending a complete bank is atomic: new shards first, then one manifest rename, so a failure (a block
        # out of range, a full disk) leaves the old complete bank as it was. A new or unfinished bank records its
        # progress in the manifest after every shard instead (marked unfinished), which `compress --resume` uses.
        atomic = manifest.complete and bool(manifest.blocks)
        writer = ShardWriter(directory, manifest, max_shard_size, record_progress=not atomic)
        if not atomic and (len(manifest.blocks) < len(self) or manifest.complete != complete):
            manifest.complete = False
            write_manifest(directory, manifest)  # marked unfinished before any shard is written
        try:
            for index in range(len(manifest.blocks), len(self)):
                writer.add(index, self.block(index))
            writer.flush()
            manifest.complete = complete
            write_manifest(directory, manifest)
        except BaseException:
            if atomic:
                writer.discard()  # the old manifest still describes the old bank; drop the new shards
            raise

    def _storage_for(self, bank_dtype: "str | StorageFormat | None") -> StorageFormat:
        """The format a new folder gets: as asked, or the first block's own layout when it is already of that dtype."""
        if isinstance(bank_dtype, StorageFormat):
            check_bank_dtype(bank_dtype.dtype)
            return bank_dtype
        dtype = bank_dtype or self.bank_dtype or default_bank_dtype(self.fingerprint.get("dtype", "float32"))
        storage = StorageFormat.for_dtype(check_bank_dtype(dtype))
        if storage.bits is not None and self._entries:
            first = self._entries[0]
            if isinstance(first, _DiskBlock):
                return first.storage if first.storage.dtype == dtype else storage
            keys, values = first.keys, first.values
            if isinstance(keys, QuantizedKV) and isinstance(values, QuantizedKV) and values.bits == storage.bits:
                key_bits = None if keys.bits == values.bits else keys.bits  # a mixed layout's keys
                return StorageFormat(dtype, keys.group_size, values.group_size, keys.rotation, values.rotation,
                                     keys.per_channel, values.per_channel, keys.outliers, key_bits)  # fmt: skip
        return storage

    def _check_spans(self) -> None:
        """Refuses to save what could not be read back: blocks must cover the document from 0, in order."""
        end = 0
        for index, (start, stop) in enumerate(self.spans):
            if start != end or stop <= start:
                raise MemoryBankError(
                    f"Block {index} spans [{start}, {stop}) but the blocks before it end at {end}: a saved bank holds "
                    "one document's blocks in order (build it with compress / append)."
                )
            end = stop

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, verify_checksums: bool = True, allow_incomplete: bool = False
    ) -> "LycheeMemoryBank":
        """Opens a saved bank. Blocks stay on disk (memory-mapped) and are read (and checked) one at a time.

        Args:
            directory (`str` or `os.PathLike`): a folder written by `save_pretrained` (format version 1 or 2).
            verify_checksums (`bool`): check each block against its checksum when it is read.
            allow_incomplete (`bool`): open a bank whose writing did not finish (to continue it).

        Raises:
            `MemoryBankError`: a missing, invalid or (unless allowed) incomplete bank, or missing shard files.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if not manifest.complete and not allow_incomplete:
            total = (manifest.document or {}).get("num_tokens", "?")
            raise MemoryBankError(
                f"Memory bank {directory} is incomplete: its writing stopped after {manifest.num_tokens} of {total} "
                "tokens (interrupted or out of disk space). Continue it with `lychee-hf compress ... --resume` or "
                "replace it with `--overwrite`."
            )
        check_files(directory, manifest)
        bank = cls(fingerprint=manifest.fingerprint, bank_dtype=manifest.storage.dtype)
        bank.complete, bank.document = manifest.complete, manifest.document
        bank._verify = verify_checksums
        reader = ShardReader(directory)
        bank._entries = [_DiskBlock(r, reader, manifest.storage, manifest.block_shape) for r in manifest.blocks]
        bank._text_source = (directory, manifest.text) if manifest.text else None
        return bank

    def _read(self, entry: _DiskBlock) -> LycheeMemoryBlock:
        tensors = entry.reader.read(entry.record, entry.storage, self._verify)
        path = entry.reader.directory / entry.record.file
        keys, values, mask = decode_block(tensors, entry.record.prefix, entry.storage, entry.shape)
        if entry.storage.bits is not None:
            shapes_ok = keys.has_consistent_shapes() and values.has_consistent_shapes()
        else:
            shapes_ok = all(
                tuple(kv.shape) == entry.shape and str(kv.dtype).replace("torch.", "") == entry.storage.dtype
                for kv in (keys, values)
            )
        if not shapes_ok or tuple(mask.shape) != entry.shape[2:3]:
            raise MemoryBankError(
                f"{path} holds a block of another shape or dtype than the manifest says ({entry.shape}, "
                f"{entry.storage.dtype}): the bank is corrupted, recompress the document."
            )
        return LycheeMemoryBlock(keys, values, mask.bool(), entry.span)

    def _existing_manifest(self, directory: Path) -> Manifest | None:
        """The manifest of `directory` if this bank extends it; None for a new or empty folder; else refused."""
        if not directory.exists() or not any(directory.iterdir()):
            return None
        if not (directory / MANIFEST_NAME).is_file():
            raise MemoryBankError(f"{directory} is not empty and holds no memory bank: choose an empty folder.")
        manifest = read_manifest(directory)
        prefix = self._entries[: len(manifest.blocks)]
        ours = [entry.record.sha256 if _saved_in(entry, directory) else None for entry in prefix]
        if (
            manifest.fingerprint != self.fingerprint
            or len(manifest.blocks) > len(self)
            or ours != [r.sha256 for r in manifest.blocks]
        ):
            raise MemoryBankError(
                f"{directory} already holds a different memory bank: save to an empty folder (nothing is overwritten)."
            )
        if manifest.version == 1 and len(manifest.blocks) < len(self):
            raise MemoryBankError(
                f"{directory} holds a version-1 bank, which cannot grow: rewrite it first with "
                f"`lychee-hf bank convert {directory} NEW_FOLDER`, then append there."
            )
        return manifest


def _saved_in(entry, directory: Path) -> bool:
    """Whether `entry` is a block saved in `directory`, at its own place in that bank."""
    return (
        isinstance(entry, _DiskBlock) and entry.offset == 0 and entry.reader.directory.resolve() == directory.resolve()
    )


def _differing_keys(first: dict, second: dict) -> list[str]:
    return sorted(key for key in set(first) | set(second) if first.get(key) != second.get(key))
