"""A memory bank's blocks on disk: safetensors shards, per-block checksums, lazy memory-mapped reads, the writer.

A block's tensors are stored under its prefix in a shard: "000000.keys", "000000.values" (or "000000.keys.codes",
".keys.scale", ".keys.zero" for int8/int4) and "000000.mask" (uint8). A block's `sha256` covers its own tensors
(names, dtypes, shapes, bytes), so one block is checked without reading its whole shard. The manifest that lists
them is `bank_manifest_lychee.py`; version-1 banks (one file per block) are still read here.
"""

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from .bank_manifest_lychee import (
    BANK_FILE_PATTERN,
    BANK_FORMAT,
    BANK_VERSION,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    READABLE_VERSIONS,
    SHARD_NAME,
    BlockRecord,
    Manifest,
    MemoryBankError,
    StorageFormat,
    manifest_json,
    read_manifest,
    start_bank,
    write_manifest,
)
from .kv_quant_lychee import QuantizedKV

_OPEN_SHARDS = 8  # memory-mapped shard handles kept open per bank

__all__ = [  # the manifest's names stay importable from here, where every bank reader has found them
    "BANK_FILE_PATTERN",
    "BANK_FORMAT",
    "BANK_VERSION",
    "DEFAULT_MAX_SHARD_BYTES",
    "MANIFEST_NAME",
    "READABLE_VERSIONS",
    "SHARD_NAME",
    "BlockRecord",
    "Manifest",
    "MemoryBankError",
    "ShardReader",
    "ShardWriter",
    "StorageFormat",
    "block_tensors",
    "check_files",
    "decode_block",
    "manifest_json",
    "read_manifest",
    "start_bank",
    "tensors_digest",
    "write_manifest",
    "write_shard",
]


# --------------------------------------------------------------------------------------------- block tensors
def block_tensors(index: int, keys, values, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors of block `index` as stored in a shard (keys/values as tensors or `QuantizedKV`)."""
    prefix = f"{index:06d}."
    tensors = {}
    for name, kv in (("keys", keys), ("values", values)):
        if isinstance(kv, QuantizedKV):
            tensors.update(kv.tensors(prefix + name))
        else:
            tensors[prefix + name] = kv
    tensors[prefix + "mask"] = mask.to(torch.uint8)
    return {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}


def tensors_digest(tensors: dict[str, torch.Tensor], prefix: str) -> str:
    """SHA-256 of a block's tensors (names without `prefix`, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        header = f"{name.removeprefix(prefix)}|{str(tensor.dtype)}|{list(tensor.shape)}\n"
        digest.update(header.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Writes one shard under a temporary name, flushed, then renamed; returns its size in bytes."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, temporary, metadata={"format": "pt", "content": BANK_FORMAT})
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def block_tensor_names(prefix: str, storage: StorageFormat) -> list[str]:
    """The names a block's tensors have in its file."""
    if storage.bits is None:
        return [f"{prefix}keys", f"{prefix}values", f"{prefix}mask"]
    names = []
    for kv in ("keys", "values"):
        names += [f"{prefix}{kv}.{part}" for part in ("codes", "scale", "zero")]
        if storage.part(kv).get("outliers"):
            names += [f"{prefix}{kv}.outlier_index", f"{prefix}{kv}.outlier_values"]
    return names + [f"{prefix}mask"]


def decode_block(tensors: dict[str, torch.Tensor], prefix: str, storage: StorageFormat, shape: tuple[int, ...]):
    """`(keys, values, mask)` of a block from its stored tensors (keys/values as tensors or `QuantizedKV`)."""
    if storage.bits is None:
        return tensors[prefix + "keys"], tensors[prefix + "values"], tensors[prefix + "mask"]
    decoded = []
    for name in ("keys", "values"):
        part = storage.part(name)
        decoded.append(
            QuantizedKV(
                tensors[f"{prefix}{name}.codes"],
                tensors[f"{prefix}{name}.scale"],
                tensors[f"{prefix}{name}.zero"],
                part["bits"],
                part["group_size"],
                part["per_channel"],
                tuple(shape),
                part["rotation"],
                tensors.get(f"{prefix}{name}.outlier_index"),
                tensors.get(f"{prefix}{name}.outlier_values"),
            )
        )
    return decoded[0], decoded[1], tensors[prefix + "mask"]


class ShardReader:
    """Reads blocks out of a bank folder's shards lazily: safetensors memory maps, a few kept open."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._handles: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, record: BlockRecord, storage: StorageFormat, verify: bool) -> dict[str, torch.Tensor]:
        """The tensors of `record` (checked against its checksum when `verify`); raises `MemoryBankError`."""
        path = self.directory / record.file
        try:
            if record.whole_file and verify:  # version 1: one file per block, checksum over the file
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != record.sha256:
                    raise MemoryBankError(f"{path} is corrupted (checksum mismatch): recompress the document.")
                return load_safetensors_bytes(data)
            tensors = self._tensors(path, block_tensor_names(record.prefix, storage))
        except MemoryBankError:
            raise
        except Exception as error:  # safetensors raises several types for truncated/garbled files and absent names
            raise MemoryBankError(f"{path} is unreadable ({error}): recompress the document.") from error
        if verify and not record.whole_file and tensors_digest(tensors, record.prefix) != record.sha256:
            raise MemoryBankError(
                f"block {record.prefix.rstrip('.')} in {path} is corrupted (checksum mismatch): recompress the "
                "document."
            )
        return tensors

    def _tensors(self, path: Path, names: list[str]) -> dict[str, torch.Tensor]:
        with self._lock:
            handle = self._handles.pop(path.name, None) or safe_open(path, framework="pt", device="cpu")
            self._handles[path.name] = handle
            while len(self._handles) > _OPEN_SHARDS:
                self._handles.popitem(last=False)
            return {name: handle.get_tensor(name) for name in names}

    def close(self) -> None:
        with self._lock:
            self._handles.clear()


class ShardWriter:
    """Groups new blocks into shards of about `max_shard_size` bytes and records them in `manifest`.

    With `record_progress`, the manifest (still marked unfinished) is rewritten after every shard, so an
    interrupted writer can be resumed; without it, only the caller's final `write_manifest` names the new shards
    (an atomic append), and `discard` removes them if the caller fails first.
    """

    def __init__(self, directory: Path, manifest: Manifest, max_shard_size: int, record_progress: bool = True):
        self.directory, self.manifest, self.max_shard_size = directory, manifest, max_shard_size
        self.record_progress = record_progress
        self.written: list[Path] = []
        self._tensors: dict[str, torch.Tensor] = {}
        self._records: list[tuple[tuple[int, int], str]] = []
        self._bytes = 0

    def add(self, index: int, block) -> None:
        """Queues block `index` (a `LycheeMemoryBlock`, converted to the bank's storage format first)."""
        block = block.astype(self.manifest.storage)
        shape = tuple(block.keys.shape)
        if self.manifest.block_shape is None:
            self.manifest.block_shape = shape
        elif shape != tuple(self.manifest.block_shape):
            raise MemoryBankError(f"Block {index} has shape {shape}, the bank {tuple(self.manifest.block_shape)}.")
        tensors = block_tensors(index, block.keys, block.values, block.mask)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if self._tensors and self._bytes + size > self.max_shard_size:
            self.flush()
        prefix = f"{index:06d}."
        self._tensors.update(tensors)
        self._records.append((block.span, tensors_digest(tensors, prefix)))
        self._bytes += size

    def flush(self) -> None:
        """Writes the pending blocks as one shard, then a manifest that lists them (still marked unfinished)."""
        if not self._tensors:
            return
        name = SHARD_NAME.format(len(self.manifest.shards))
        size = write_shard(self.directory / name, self._tensors)
        self.written.append(self.directory / name)
        self.manifest.shards.append({"file": name, "bytes": size})
        for span, sha in self._records:
            prefix = f"{len(self.manifest.blocks):06d}."
            self.manifest.blocks.append(BlockRecord(tuple(span), name, prefix, sha, False))
        self.manifest.num_tokens = self.manifest.blocks[-1].span[1]
        if self.record_progress:
            write_manifest(self.directory, self.manifest)
        self._tensors, self._records, self._bytes = {}, [], 0

    def discard(self) -> None:
        """Removes the shards this writer wrote (and its pending temporary file)."""
        for path in self.written:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        pending = self.directory / (SHARD_NAME.format(len(self.manifest.shards)) + ".tmp")
        pending.unlink(missing_ok=True)


def check_files(directory: Path, manifest: Manifest) -> None:
    """Every file the manifest names exists (and shards have their recorded size)."""
    sizes = {shard["file"]: shard.get("bytes") for shard in manifest.shards}
    for name in dict.fromkeys(record.file for record in manifest.blocks):
        path = directory / name
        if not path.is_file():
            raise MemoryBankError(f"Memory bank {directory} is incomplete: {name} is missing.")
        if isinstance(sizes.get(name), int) and path.stat().st_size != sizes[name]:
            raise MemoryBankError(
                f"Memory bank {directory} is damaged: {name} has {path.stat().st_size} bytes, the manifest says "
                f"{sizes[name]}: recompress the document."
            )
