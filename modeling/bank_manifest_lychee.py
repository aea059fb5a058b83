"""A memory bank's manifest, `bank.json`: its format, validation as a whole, and atomic writes.

Layout of a bank folder (format version 2):

    bank.json                  manifest: format, version, complete, fingerprint, storage (dtype; per part: groups,
                               rotation, outliers), block_shape, num_tokens, shards [{file, bytes}],
                               blocks [{span, shard, sha256}], and for a bank made from text: text {file, sha256,
                               chars}
    shard-00000.safetensors    blocks 0..k-1 (bank_storage_lychee.py)
    document.txt               the document's text (bank_text_lychee.py)

`complete` is false while a bank is being written and becomes true only in the last manifest, so a bank cut short
(interrupt, full disk) is refused on read instead of answering from part of the document. Version-1 manifests (one
`block-NNNNNN.safetensors` per block, a checksum per file, no `complete`) are still read.
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .bank_text_lychee import DocumentText, DocumentTextError, parse_text_record, write_text
from .kv_quant_lychee import (
    BANK_DTYPES,
    FLOAT_STORAGE,
    KEY_GROUP_SIZE,
    KEY_OUTLIERS,
    KEY_PER_CHANNEL,
    KEY_ROTATION,
    QUANTIZED_BITS,
    ROTATIONS,
    VALUE_GROUP_SIZE,
    VALUE_ROTATION,
)

BANK_FORMAT = "lychee-memory-bank"
BANK_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "bank.json"
DEFAULT_MAX_SHARD_BYTES = 512 * 2**20
SHARD_NAME = "shard-{:05d}.safetensors"
# Every file name a bank writes (manifest, shards, version-1 block files, and their temporary names).
BANK_FILE_PATTERN = re.compile(r"(bank\.json|shard-\d+\.safetensors|block-\d+\.safetensors|document\.txt)(\.tmp)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")


_GROUPS = {True: "per_channel", False: "per_token"}


class MemoryBankError(ValueError):
    """A memory bank that cannot be used: missing, incomplete, corrupted, or made by another model."""


@dataclass(frozen=True)
class StorageFormat:
    """How a bank stores its blocks' K/V.

    Attributes:
        dtype (`str`): `"float32"`, `"float16"`, `"bfloat16"`, `"int8"` or `"int4"`.
        key_group_size / value_group_size (`int`, *optional*): quantization groups (int8/int4 only).
        key_rotation / value_rotation (`str`, *optional*): `"hadamard"` when those head vectors are rotated before
            quantizing (int8/int4; undone on read).
        key_per_channel / value_per_channel (`bool`): a scale per channel with groups along slots (True), or per
            slot with groups along channels (False).
        key_outliers (`int`): key channels per layer and head kept in float16 beside the codes (0: none).
        key_bits (`int`, *optional*): the keys' bits when they differ from the dtype's (a mixed layout, e.g. 8-bit
            keys with int4 values: keys decide which slots attention reads); `None`: the dtype's. The dtype names
            the values' bits.

    In `bank.json` each part (`keys`, `values`) records its bits, groups, group size, and its rotation and
    outliers when it has them. A part without `rotation` / `outliers` (every bank written before they existed)
    reads as none; without `groups`, as KIVI's layout (keys per channel, values per token). Old int4 and int8 banks
    (their parts' bits are the dtype's) therefore load unchanged.
    """

    dtype: str
    key_group_size: int | None = None
    value_group_size: int | None = None
    key_rotation: str | None = None
    value_rotation: str | None = None
    key_per_channel: bool = True
    value_per_channel: bool = False
    key_outliers: int = 0
    key_bits: int | None = None

    @classmethod
    def for_dtype(cls, dtype: str) -> "StorageFormat":
        """The format a new bank of `dtype` gets (for int8/int4: the layout chosen by measurement)."""
        if dtype not in QUANTIZED_BITS:
            return cls(dtype)
        return cls(
            dtype,
            KEY_GROUP_SIZE[dtype],
            VALUE_GROUP_SIZE[dtype],
            KEY_ROTATION[dtype],
            VALUE_ROTATION[dtype],
            KEY_PER_CHANNEL[dtype],
            False,
            KEY_OUTLIERS[dtype],
        )

    @property
    def bits(self) -> int | None:
        return QUANTIZED_BITS.get(self.dtype)

    def part(self, name: str) -> dict:
        """`bits`, `group_size`, `per_channel`, `rotation`, `outliers` of `"keys"` or `"values"`."""
        if name == "keys":
            return dict(
                bits=self.key_bits or self.bits,
                group_size=self.key_group_size,
                per_channel=self.key_per_channel,
                rotation=self.key_rotation,
                outliers=self.key_outliers,
            )
        return dict(
            bits=self.bits,
            group_size=self.value_group_size,
            per_channel=self.value_per_channel,
            rotation=self.value_rotation,
            outliers=0,
        )

    def to_json(self) -> dict:
        if self.bits is None:
            return {"dtype": self.dtype}
        stored = {"dtype": self.dtype}
        for name in ("keys", "values"):
            part = self.part(name)
            entry = {"bits": part["bits"], "groups": _GROUPS[part["per_channel"]], "group_size": part["group_size"]}
            if part["rotation"]:
                entry["rotation"] = part["rotation"]
            if part.get("outliers"):
                entry["outliers"] = part["outliers"]
            stored[name] = entry
        return stored

    @classmethod
    def from_json(cls, value, where: str) -> "StorageFormat":
        _expect(isinstance(value, dict) and value.get("dtype") in BANK_DTYPES, where, f"storage {value!r}")
        if value["dtype"] not in QUANTIZED_BITS:
            return cls(value["dtype"])
        parts = {}
        for part, default in (("keys", "per_channel"), ("values", "per_token")):
            entry = value.get(part) if isinstance(value.get(part), dict) else {}
            group, groups = entry.get("group_size"), entry.get("groups", default)
            rotation, outliers = entry.get("rotation"), entry.get("outliers", 0)
            bits = entry.get("bits", QUANTIZED_BITS[value["dtype"]])
            _expect(_is_int(bits) and bits in QUANTIZED_BITS.values(), where, f"storage.{part}.bits {bits!r}")
            _expect(part == "keys" or bits == QUANTIZED_BITS[value["dtype"]], where, f"storage.values.bits {bits!r}")
            _expect(_is_int(group) and group > 0, where, f"storage.{part}.group_size {group!r}")
            _expect(groups in _GROUPS.values(), where, f"storage.{part}.groups {groups!r}")
            _expect(rotation is None or rotation in ROTATIONS, where, f"storage.{part}.rotation {rotation!r}")
            _expect(_is_int(outliers) and outliers >= 0, where, f"storage.{part}.outliers {outliers!r}")
            _expect(part == "keys" or outliers == 0, where, "storage.values.outliers (only keys keep outliers)")
            parts[part] = (group, groups == "per_channel", rotation, outliers, bits)
        (key_group, key_channel, key_rotation, key_outliers, key_bits) = parts["keys"]
        (value_group, value_channel, value_rotation, _, _) = parts["values"]
        return cls(
            value["dtype"],
            key_group,
            value_group,
            key_rotation,
            value_rotation,
            key_channel,
            value_channel,
            key_outliers,
            None if key_bits == QUANTIZED_BITS[value["dtype"]] else key_bits,  # as `for_dtype` has it
        )


@dataclass(frozen=True)
class BlockRecord:
    """Where one saved block lives: a shard and tensor prefix (v2) or its own file (v1), and its checksum."""

    span: tuple[int, int]
    file: str
    prefix: str  # tensor names are f"{prefix}keys" etc.; "" in a v1 block file
    sha256: str
    whole_file: bool  # v1: the checksum covers the file, not the tensors


@dataclass
class Manifest:
    """A validated `bank.json`."""

    version: int
    complete: bool
    fingerprint: dict
    storage: StorageFormat
    block_shape: tuple[int, ...] | None
    num_tokens: int
    blocks: list[BlockRecord]
    shards: list[dict] = field(default_factory=list)
    document: dict | None = None
    text: dict | None = None  # the document text's record (bank_text_lychee.py), when the bank keeps the text


# --------------------------------------------------------------------------------------------- manifest
def read_manifest(directory: Path) -> Manifest:
    """Reads and validates `directory/bank.json`; raises `MemoryBankError` naming the first problem."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise MemoryBankError(f"{directory} holds no memory bank ({MANIFEST_NAME} not found).")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MemoryBankError(f"{path} is corrupted ({error}): recompress the document.") from error
    _expect(isinstance(raw, dict), path, "the manifest is not a JSON object")
    if raw.get("format") != BANK_FORMAT or raw.get("version") not in READABLE_VERSIONS:
        raise MemoryBankError(
            f"{path} is not a {BANK_FORMAT} manifest of version {'/'.join(map(str, READABLE_VERSIONS))} (format "
            f"{raw.get('format')!r}, version {raw.get('version')!r}): it was written by another program or a newer "
            "lychee-hf."
        )
    return _parse_v1(raw, directory, path) if raw["version"] == 1 else _parse_v2(raw, directory, path)


def _parse_v2(raw: dict, directory: Path, path: Path) -> Manifest:
    complete, fingerprint = _field(raw, "complete", bool, path), _field(raw, "fingerprint", dict, path)
    storage = StorageFormat.from_json(raw.get("storage"), str(path))
    shards = _field(raw, "shards", list, path)
    shard_files = []
    for index, shard in enumerate(shards):
        _expect(isinstance(shard, dict), path, f"shards[{index}] is not an object")
        shard_files.append(_file_name(shard.get("file"), directory, path, f"shards[{index}].file"))
    _expect(len(set(shard_files)) == len(shard_files), path, "a shard file is listed twice")
    records = []
    for index, record in enumerate(_field(raw, "blocks", list, path)):
        where = f"blocks[{index}]"
        _expect(isinstance(record, dict), path, f"{where} is not an object")
        shard = record.get("shard")
        _expect(_is_int(shard) and 0 <= shard < len(shard_files), path, f"{where}.shard {shard!r} names no shard")
        span, sha = _span(record, path, where), _sha(record, path, where)
        records.append(BlockRecord(span, shard_files[shard], f"{index:06d}.", sha, False))
    manifest = Manifest(
        2,
        complete,
        fingerprint,
        storage,
        _block_shape(raw, path, bool(records)),
        _field(raw, "num_tokens", int, path),
        records,
        shards,
        raw.get("document") if isinstance(raw.get("document"), dict) else None,
        _text_record(raw, path),
    )
    _check_spans(manifest, path)
    return manifest


def _text_record(raw: dict, path: Path) -> dict | None:
    try:
        return parse_text_record(raw.get("text"), str(path))
    except DocumentTextError as error:
        raise MemoryBankError(str(error)) from error


def _parse_v1(raw: dict, directory: Path, path: Path) -> Manifest:
    fingerprint = _field(raw, "fingerprint", dict, path)
    dtype = raw.get("dtype")
    records = []
    for index, record in enumerate(_field(raw, "blocks", list, path)):
        where = f"blocks[{index}]"
        _expect(isinstance(record, dict), path, f"{where} is not an object")
        name = _file_name(record.get("file"), directory, path, f"{where}.file")
        records.append(BlockRecord(_span(record, path, where), name, "", _sha(record, path, where), True))
    _expect(len({r.file for r in records}) == len(records), path, "a block file is listed twice")
    _expect(not records or dtype in FLOAT_STORAGE, path, f"dtype {dtype!r}")
    manifest = Manifest(
        1,
        True,  # version 1 had no completeness marker
        fingerprint,
        StorageFormat(dtype if dtype in FLOAT_STORAGE else "float32"),
        _block_shape(raw, path, bool(records)),
        _field(raw, "num_tokens", int, path),
        records,
    )
    _check_spans(manifest, path)
    return manifest


def _check_spans(manifest: Manifest, path: Path) -> None:
    """Blocks in document order, each span non-empty and starting where the previous one ends, the last ending at
    num_tokens, none longer than the fingerprint's chunk_size."""
    chunk_size = manifest.fingerprint.get("chunk_size")
    end = 0
    for index, record in enumerate(manifest.blocks):
        start, stop = record.span
        where = f"where block {index - 1} ends ({end})" if index else "at 0, the document's start"
        _expect(
            start == end,
            path,
            f"block {index}'s span {list(record.span)} does not start {where}: blocks are missing, repeated or out "
            "of order",
        )
        _expect(stop > start, path, f"block {index}'s span {list(record.span)} is empty")
        if _is_int(chunk_size):
            _expect(stop - start <= chunk_size, path, f"block {index} spans {stop - start} > chunk_size {chunk_size}")
        end = stop
    _expect(
        end == manifest.num_tokens,
        path,
        f"the blocks cover {end} tokens but num_tokens is {manifest.num_tokens}: blocks are missing",
    )
    shape = manifest.block_shape
    fingerprint = manifest.fingerprint
    if shape is not None:
        expected = [fingerprint.get(k) for k in ("num_hidden_layers", "num_key_value_heads", None, "head_dim")]
        for found, wanted in zip(shape, expected):
            _expect(wanted is None or found == wanted, path, f"block_shape {list(shape)} disagrees with fingerprint")


def _field(raw: dict, key: str, kind: type, path: Path):
    value = raw.get(key)
    _expect(key in raw, path, f"key {key!r} is missing")
    ok = _is_int(value) and value >= 0 if kind is int else isinstance(value, kind)
    _expect(ok, path, f"{key!r} is {value!r}, expected {'a count' if kind is int else kind.__name__}")
    return value


def _span(record: dict, path: Path, where: str) -> tuple[int, int]:
    span = record.get("span")
    _expect(
        isinstance(span, list) and len(span) == 2 and all(_is_int(x) and x >= 0 for x in span),
        path,
        f"{where}.span {span!r} is not [start, end]",
    )
    return tuple(span)


def _sha(record: dict, path: Path, where: str) -> str:
    sha = record.get("sha256")
    _expect(isinstance(sha, str) and _SHA256.fullmatch(sha) is not None, path, f"{where}.sha256 {sha!r}")
    return sha


def _block_shape(raw: dict, path: Path, required: bool) -> tuple[int, ...] | None:
    shape = raw.get("block_shape")
    if shape is None and not required:
        return None
    _expect(
        isinstance(shape, list) and len(shape) == 4 and all(_is_int(x) and x > 0 for x in shape),
        path,
        f"block_shape {shape!r} is not [layers, kv_heads, slots, head_dim]",
    )
    return tuple(shape)


def _file_name(name, directory: Path, path: Path, where: str) -> str:
    """A plain file name inside `directory` (no separators, no '..', not absolute, not hidden)."""
    plain = isinstance(name, str) and name == Path(name).name and not name.startswith(".") and "\\" not in name
    _expect(plain and (directory / name).resolve().parent == directory.resolve(), path, f"{where} {name!r}")
    return name


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(condition: bool, path, problem: str) -> None:
    if not condition:
        raise MemoryBankError(
            f"{path} is not a valid memory-bank manifest ({problem}): recompress the document or restore the file."
        )


def manifest_json(manifest: Manifest) -> dict:
    """The v2 `bank.json` content of `manifest`."""
    return {
        "format": BANK_FORMAT,
        "version": BANK_VERSION,
        "complete": manifest.complete,
        "fingerprint": manifest.fingerprint,
        "storage": manifest.storage.to_json(),
        "block_shape": list(manifest.block_shape) if manifest.block_shape else None,
        "num_tokens": manifest.num_tokens,
        **({"document": manifest.document} if manifest.document else {}),
        **({"text": manifest.text} if manifest.text else {}),
        "shards": manifest.shards,
        "blocks": [
            {"span": list(r.span), "shard": _shard_index(manifest, r.file), "sha256": r.sha256} for r in manifest.blocks
        ],
    }


def _shard_index(manifest: Manifest, file: str) -> int:
    return next(i for i, shard in enumerate(manifest.shards) if shard["file"] == file)


def start_bank(
    directory: Path,
    fingerprint: dict,
    storage: StorageFormat,
    document: dict | None = None,
    text: DocumentText | None = None,
) -> None:
    """Writes the manifest of a new, empty bank marked unfinished (a streaming writer appends blocks to it; readers
    refuse it until it is complete), and the document's text when given. Files already in `directory` that are not
    a bank's stay untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    if text is not None:
        write_text(directory, text)
    record = text.record() if text is not None else None
    manifest = Manifest(BANK_VERSION, False, dict(fingerprint), storage, None, 0, [], [], document, record)
    write_manifest(directory, manifest)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replaces `bank.json` atomically (a reader sees the old or the new manifest, never a torn one)."""
    temporary = directory / (MANIFEST_NAME + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest_json(manifest), handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / MANIFEST_NAME)
