"""The compressed document: one K/V block per chunk, plus what made it. Data only, never model state.

A bank lives in memory, on disk, or both: blocks saved with `save_pretrained` are read back lazily, one block
per access, so a bank far larger than the accelerator (or host memory) streams through the reasoner.

On-disk layout (a folder):
    bank.json                 manifest: format, version, fingerprint, block shape/dtype, per block its span,
                              file name and SHA-256
    block-000000.safetensors  keys (L, H_kv, S, D), values (L, H_kv, S, D), mask (S,) uint8
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save_file

BANK_FORMAT = "lychee-memory-bank"
BANK_VERSION = 1
MANIFEST_NAME = "bank.json"


class MemoryBankError(ValueError):
    """A memory bank that cannot be used: missing, truncated, corrupted, or made by another model."""


@dataclass
class LycheeMemoryBlock:
    """One chunk's K/V as the reasoner reads it.

    Attributes:
        keys (`torch.Tensor`): (num_layers, num_kv_heads, slots, head_dim), before rotary embedding.
        values (`torch.Tensor`): same shape as `keys`.
        mask (`torch.BoolTensor`): (slots,), True where the slot summarises at least one real token.
        span (`tuple[int, int]`): the chunk's [start, end) in the document's (unpadded) token ids.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    span: tuple[int, int]

    @property
    def num_slots(self) -> int:
        return self.keys.shape[2]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "LycheeMemoryBlock":
        return LycheeMemoryBlock(
            keys=self.keys.to(device=device, dtype=dtype),
            values=self.values.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            span=self.span,
        )

    def shifted(self, offset: int) -> "LycheeMemoryBlock":
        return LycheeMemoryBlock(self.keys, self.values, self.mask, (self.span[0] + offset, self.span[1] + offset))


@dataclass
class _DiskBlock:
    """Where a saved block lives and how to check it."""

    path: Path
    sha256: str
    span: tuple[int, int]


class LycheeMemoryBank:
    """A document compressed once, to answer many questions (`model.generate(input_ids=..., memory=bank)`).

    Args:
        blocks (`list[LycheeMemoryBlock]`, *optional*): in document order.
        fingerprint (`dict`, *optional*): the model settings that made the blocks; a model reads only banks whose
            fingerprint equals its own `memory_fingerprint()`.
    """

    def __init__(self, blocks: list[LycheeMemoryBlock] | None = None, fingerprint: dict | None = None):
        self._entries: list[LycheeMemoryBlock | _DiskBlock] = list(blocks or [])
        self.fingerprint = dict(fingerprint or {})
        self._expected_shape: tuple[int, ...] | None = None
        self._expected_dtype: str | None = None
        self._verify = True

    # ----------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        on_disk = sum(isinstance(e, _DiskBlock) for e in self._entries)
        return f"LycheeMemoryBank(blocks={len(self)}, tokens={self.num_tokens}, on_disk={on_disk})"

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [entry.span for entry in self._entries]

    @property
    def num_tokens(self) -> int:
        """Document tokens the bank covers."""
        return self._entries[-1].span[1] if self._entries else 0

    def block(self, index: int) -> LycheeMemoryBlock:
        """Block `index`, read from disk (and checked) if it lives there; nothing is cached."""
        entry = self._entries[index]
        return entry if isinstance(entry, LycheeMemoryBlock) else self._read(entry)

    @property
    def blocks(self) -> list[LycheeMemoryBlock]:
        """Every block, loaded (for a disk bank this reads the whole bank: prefer `block(i)`)."""
        return [self.block(i) for i in range(len(self))]

    def append(self, other: "LycheeMemoryBank") -> None:
        """Adds the blocks of `other` (the document's continuation, compressed by the same model) at the end."""
        if self._entries and other.fingerprint != self.fingerprint:
            raise MemoryBankError(
                "Cannot append a bank made with other settings (differs in: "
                + ", ".join(_differing_keys(self.fingerprint, other.fingerprint))
                + ")."
            )
        if not self._entries:
            self.fingerprint = dict(other.fingerprint)
        offset = self.num_tokens
        for index in range(len(other)):
            entry = other._entries[index]
            if isinstance(entry, _DiskBlock):
                self._entries.append(_DiskBlock(entry.path, entry.sha256, _shift(entry.span, offset)))
                self._expected_shape, self._expected_dtype = other._expected_shape, other._expected_dtype
            else:
                self._entries.append(entry.shifted(offset))

    def check_compatible(self, expected_fingerprint: dict) -> None:
        """Raises `MemoryBankError` naming every setting in which this bank differs from `expected_fingerprint`."""
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
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Writes the bank as safetensors blocks + `bank.json`.

        Saving into the folder this bank was loaded from (or a folder holding a prefix of it) writes only the new
        blocks, so a growing document is appended in place. A folder holding anything else is refused, never
        overwritten.
        """
        directory = Path(save_directory)
        existing = self._existing_prefix(directory)
        directory.mkdir(parents=True, exist_ok=True)
        records = list(existing)
        shape, dtype = (self._expected_shape, self._expected_dtype) if existing else (None, None)
        for index in range(len(existing), len(self)):
            block = self.block(index)
            path = directory / f"block-{index:06d}.safetensors"
            _write_block(block, path)
            records.append({"file": path.name, "span": list(block.span), "sha256": _sha256(path)})
            shape, dtype = shape or tuple(block.keys.shape), dtype or str(block.keys.dtype).replace("torch.", "")
        manifest = {
            "format": BANK_FORMAT,
            "version": BANK_VERSION,
            "fingerprint": self.fingerprint,
            "block_shape": list(shape) if shape else None,
            "dtype": dtype,
            "num_tokens": self.num_tokens,
            "blocks": records,
        }
        temporary = directory / (MANIFEST_NAME + ".tmp")
        temporary.write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, directory / MANIFEST_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, verify_checksums: bool = True) -> "LycheeMemoryBank":
        """Opens a saved bank. Blocks stay on disk and are read (and checked) one at a time when used.

        Args:
            directory (`str` or `os.PathLike`): a folder written by `save_pretrained`.
            verify_checksums (`bool`): check each block file's SHA-256 when it is read (then the file is read
                whole); without it, blocks are memory-mapped.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        bank = cls(fingerprint=manifest["fingerprint"])
        bank._expected_shape = tuple(manifest["block_shape"]) if manifest["block_shape"] else None
        bank._expected_dtype = manifest["dtype"]
        bank._verify = verify_checksums
        for record in manifest["blocks"]:
            path = directory / record["file"]
            if not path.is_file():
                raise MemoryBankError(f"Memory bank {directory} is incomplete: {record['file']} is missing.")
            bank._entries.append(_DiskBlock(path, record["sha256"], tuple(record["span"])))
        return bank

    def _read(self, entry: _DiskBlock) -> LycheeMemoryBlock:
        try:
            if self._verify:
                data = entry.path.read_bytes()
                if hashlib.sha256(data).hexdigest() != entry.sha256:
                    raise MemoryBankError(f"{entry.path} is corrupted (checksum mismatch): recompress the document.")
                tensors = load_safetensors_bytes(data)
            else:
                tensors = load_file(entry.path)
        except MemoryBankError:
            raise
        except Exception as error:  # safetensors raises several types for truncated/garbled headers
            raise MemoryBankError(f"{entry.path} is unreadable ({error}): recompress the document.") from error
        keys, values, mask = tensors.get("keys"), tensors.get("values"), tensors.get("mask")
        if keys is None or values is None or mask is None:
            raise MemoryBankError(f"{entry.path} lacks keys, values or mask: it is not a LycheeMemory block.")
        shape_ok = self._expected_shape is None or tuple(keys.shape) == self._expected_shape
        dtype_ok = self._expected_dtype is None or str(keys.dtype).replace("torch.", "") == self._expected_dtype
        if not (shape_ok and dtype_ok and values.shape == keys.shape and mask.shape == keys.shape[2:3]):
            raise MemoryBankError(
                f"{entry.path} holds keys {tuple(keys.shape)} {keys.dtype}, but the manifest says "
                f"{self._expected_shape} {self._expected_dtype}: the bank is corrupted, recompress the document."
            )
        return LycheeMemoryBlock(keys, values, mask.bool(), entry.span)

    def _existing_prefix(self, directory: Path) -> list[dict]:
        """Manifest records of `directory` that this bank extends; refuses a folder holding something else."""
        if not directory.exists() or not any(directory.iterdir()):
            return []
        if not (directory / MANIFEST_NAME).is_file():
            raise MemoryBankError(f"{directory} is not empty and holds no memory bank: choose an empty folder.")
        manifest = _read_manifest(directory)
        records = manifest["blocks"]
        ours = [
            entry.sha256
            if isinstance(entry, _DiskBlock) and entry.path.parent.resolve() == directory.resolve()
            else None
            for entry in self._entries[: len(records)]
        ]
        if (
            manifest["fingerprint"] != self.fingerprint
            or len(records) > len(self)
            or ours != [r["sha256"] for r in records]
        ):
            raise MemoryBankError(
                f"{directory} already holds a different memory bank: save to an empty folder (nothing is overwritten)."
            )
        return records


def _write_block(block: LycheeMemoryBlock, path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    save_file(
        {
            "keys": block.keys.detach().contiguous().cpu(),
            "values": block.values.detach().contiguous().cpu(),
            "mask": block.mask.to(torch.uint8).cpu(),
        },
        temporary,
    )
    os.replace(temporary, path)


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise MemoryBankError(f"{directory} holds no memory bank ({MANIFEST_NAME} not found).")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MemoryBankError(f"{path} is corrupted ({error}): recompress the document.") from error
    if manifest.get("format") != BANK_FORMAT or manifest.get("version") != BANK_VERSION:
        raise MemoryBankError(
            f"{path} is not a {BANK_FORMAT} v{BANK_VERSION} manifest (format {manifest.get('format')!r}, "
            f"version {manifest.get('version')!r})."
        )
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _shift(span: tuple[int, int], offset: int) -> tuple[int, int]:
    return (span[0] + offset, span[1] + offset)


def _differing_keys(first: dict, second: dict) -> list[str]:
    return sorted(key for key in set(first) | set(second) if first.get(key) != second.get(key))
