"""Storage formats of a memory block's K/V: float16 / bfloat16 / float32 copies, or 8- and 4-bit codes.

Low-bit blocks follow KIVI (Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"):

- **keys per channel**: each (layer, head, channel) gets its own scale and zero point over a group of slots.
  Keys carry a few outlier channels whose magnitude is many times the rest, and the outliers stay in the same
  channels from token to token. Grouping along a channel confines an outlier to its own scale; grouping along a
  token would stretch every channel's step to the outlier's range. Our keys are stored before rotary embedding,
  where the outlier channels are fixed (rotation mixes channel pairs by position), so this fits even better here.
- **values per token**: each (layer, head, slot) gets its own scale and zero point over a group of channels.
  Values have no fixed outlier channels, and attention output is a weighted sum of value rows, so an error
  relative to each row's own range is what keeps the output close.

**Rotation** (`rotation="hadamard"`, QuaRot / QuIP#-style): before quantizing, each head vector is multiplied by a
fixed orthogonal matrix, a randomized Walsh–Hadamard transform (random signs, then a normalized Hadamard matrix;
block-diagonal Hadamard blocks when head_dim is not a power of two). A few outlier channels otherwise set the step
of every group they fall in; after the rotation their energy is spread over all channels, so 4-bit codes lose far
less. Reading applies the inverse (the transform is its own transpose) after dequantization, so attention sees
ordinary un-rotated K/V and no attention code changes. The signs come from a hash of head_dim: the same on every
machine and release, nothing extra is stored.

**Outlier channels** (`outliers=c`, KVQuant's dense-and-sparse split, used for keys): per layer and head, the `c`
channels with the largest magnitude over the block stay in float16 beside the codes, and are zeroed before
quantizing. Keys decide which slots attention reads, and their few large channels carry most of a score's error at
4 bits: on the embedded default, 4-bit keys changed the README's main answer with or without rotation, while 4-bit
keys with 8 float16 channels per head (of 64) answered it right, and 48 of 54 questions at 2K and 8K as float32
did (the plain KIVI int4: 44; int8 keys with these values: 52, but 5.0x smaller than float32 instead of 6.25x;
benchmarks/RESULTS.md).

Quantization is asymmetric (`x ≈ code * scale + zero`, `zero` = the group's minimum), codes are stored as uint8 (two
per byte for int4), scales and zero points in float16 (float32 if the K/V exceed float16's range), beside the
codes in the same safetensors file. Slots that summarise no token (the last chunk's padding) are never read by
attention; before quantizing they take a real slot's value, so they do not widen any key group's range.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import torch

FLOAT_STORAGE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUANTIZED_BITS = {"int8": 8, "int4": 4}
BANK_DTYPES = (*FLOAT_STORAGE, *QUANTIZED_BITS)

# Group sizes (slots per key group, channels per value group). Each group stores two float16 numbers, so a group
# of g elements adds 32/g bits per element: int4 with 32-element groups is only 6.4x smaller than float32, with
# 128-slot key groups and 64-channel value groups 7.3x (8x is the bound for 4-bit codes). On the embedded
# default's K/V the larger groups raise the relative error of keys from 3.6% to 4.6% and of values from 8.2% to
# 9.7% (benchmarks/RESULTS.md measures what that does to answers).
KEY_GROUP_SIZE = {"int8": 128, "int4": 128}
VALUE_GROUP_SIZE = {"int8": 128, "int4": 64}
# Rotation, key layout and float16 key channels of new banks (benchmarks/bank_formats.py measured them; older banks
# record theirs). int4: keys KIVI per channel with 8 float16 outlier channels per head, values rotated per token.
KEY_ROTATION = {"int8": None, "int4": None}
VALUE_ROTATION = {"int8": None, "int4": "hadamard"}
KEY_PER_CHANNEL = {"int8": True, "int4": True}
KEY_OUTLIERS = {"int8": 0, "int4": 8}
_FLOAT16_LIMIT = 60000.0  # scales and zero points stay in float16 below this magnitude
ROTATIONS = ("hadamard",)


def default_bank_dtype(model_dtype: torch.dtype | str) -> str:
    """The storage format a bank gets unless told: float16 for float32 models (half the bytes, no visible
    difference in answers), the model's own dtype otherwise."""
    name = str(model_dtype).replace("torch.", "")
    return "float16" if name == "float32" else name


def check_bank_dtype(bank_dtype: str) -> str:
    """Returns `bank_dtype` if it is a storage format, else raises a `ValueError` listing them."""
    if bank_dtype not in BANK_DTYPES:
        raise ValueError(f"bank_dtype {bank_dtype!r} is not a memory-bank format: use one of {list(BANK_DTYPES)}.")
    return bank_dtype


@dataclass
class QuantizedKV:
    """A (num_layers, num_kv_heads, slots, head_dim) tensor stored as `bits`-bit codes in groups.

    Attributes:
        codes (`torch.Tensor`): uint8 (L, H, A, G * group_size * bits / 8), where A is the axis that gets its own
            scales (head_dim for keys: per channel; slots for values: per token) and the groups run along the other.
        scale (`torch.Tensor`): (L, H, A, G) step of each group.
        zero (`torch.Tensor`): (L, H, A, G) value of code 0 in each group.
        bits (`int`): 8 or 4.
        group_size (`int`): elements per group as configured (an axis shorter than it is one group, see
            `effective_group_size`; the grouped axis is padded to a multiple of the group).
        per_channel (`bool`): True for keys (groups along slots), False for values (groups along channels).
        shape (`tuple[int, int, int, int]`): the (L, H, S, D) shape it stands for.
        rotation (`str`, *optional*): `"hadamard"` when head vectors were rotated before quantizing (undone on
            read), `None` for plain KIVI codes (banks written before rotation existed).
        outlier_index (`torch.Tensor`, *optional*): (L, H, c) int16, the channels kept in float outside the codes.
        outlier_values (`torch.Tensor`, *optional*): (L, H, S, c) their values (float16, or float32 beyond its range).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int
    per_channel: bool
    shape: tuple[int, int, int, int]
    rotation: str | None = None
    outlier_index: torch.Tensor | None = None
    outlier_values: torch.Tensor | None = None

    @property
    def outliers(self) -> int:
        """Channels per layer and head kept in float (0 without)."""
        return 0 if self.outlier_index is None else self.outlier_index.shape[-1]

    @property
    def drops_outliers(self) -> bool:
        """Whether the codes leave the outlier channels out (per-channel groups without rotation: each channel has
        its own codes, so the float16 channels need none); otherwise they are coded as zeros."""
        return bool(self.outliers) and self.per_channel and self.rotation is None

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def layer(self, index: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        """Layer `index` as a float (H, S, D) tensor, dequantized on `device` (only that layer's codes move)."""
        device = device if device is not None else self.codes.device
        length = self.shape[2] if self.per_channel else self.shape[3]
        group = effective_group_size(self.group_size, length)
        codes = _unpack(self.codes[index].to(device), self.bits)  # (H, A, padded)
        heads, axis, padded = codes.shape
        grouped = codes.reshape(heads, axis, padded // group, group).float()
        scale, zero = self.scale[index].to(device).float(), self.zero[index].to(device).float()  # (H, A, G)
        dense = (grouped * scale[..., None] + zero[..., None]).reshape(heads, axis, padded)
        dense = dense[..., :length]
        dense = dense.transpose(1, 2) if self.per_channel else dense  # (H, S, D) or (H, S, D - c)
        if self.drops_outliers:
            coded = coded_channels(self.outlier_index[index].to(device=device, dtype=torch.long), self.shape[3])
            full = dense.new_zeros(heads, self.shape[2], self.shape[3])
            dense = full.scatter(2, coded[:, None, :].expand(-1, self.shape[2], -1), dense)  # (H, S, D)
        if self.rotation is not None:
            dense = dense @ rotation_matrix(self.shape[3], self.rotation, dense.device)  # back to the model's basis
        if self.outlier_index is not None:
            channels = self.outlier_index[index].to(device=device, dtype=torch.long)  # (H, c)
            kept = self.outlier_values[index].to(device=device, dtype=torch.float32)  # (H, S, c)
            dense = dense.scatter(2, channels[:, None, :].expand(-1, dense.shape[1], -1), kept)
        return dense.to(dtype)

    def dequantize(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        """The whole (L, H, S, D) tensor in `dtype` on `device`."""
        return torch.stack([self.layer(i, device, dtype) for i in range(self.shape[0])])

    def has_consistent_shapes(self) -> bool:
        """Whether codes, scales and zero points have the shapes `shape`, `bits` and `group_size` imply."""
        layers, heads, slots, head_dim = self.shape
        axis, length = (head_dim, slots) if self.per_channel else (slots, head_dim)
        axis -= self.outliers if self.drops_outliers else 0
        group = effective_group_size(self.group_size, length)
        groups = -(-length // group)
        meta = (layers, heads, axis, groups)
        outliers_ok = (self.outlier_index is None) == (self.outlier_values is None) and (
            self.outlier_index is None
            or (
                tuple(self.outlier_index.shape) == (layers, heads, self.outliers)
                and tuple(self.outlier_values.shape) == (layers, heads, slots, self.outliers)
                and int(self.outlier_index.min()) >= 0
                and int(self.outlier_index.max()) < head_dim
            )
        )
        return (
            tuple(self.codes.shape) == (*meta[:3], groups * group * self.bits // 8)
            and self.codes.dtype == torch.uint8
            and tuple(self.scale.shape) == meta
            and tuple(self.zero.shape) == meta
            and outliers_ok
        )

    def _map(self, function) -> "QuantizedKV":
        """The same layout with `function` applied to every stored tensor."""
        optional = [None if t is None else function(t) for t in (self.outlier_index, self.outlier_values)]
        return QuantizedKV(
            function(self.codes),
            function(self.scale),
            function(self.zero),
            self.bits,
            self.group_size,
            self.per_channel,
            self.shape,
            self.rotation,
            *optional,
        )

    def to(self, device: torch.device | str) -> "QuantizedKV":
        """The same codes on `device` (still quantized)."""
        return self._map(lambda t: t.to(device))

    def clone(self) -> "QuantizedKV":
        return self._map(torch.clone)

    def detach(self) -> "QuantizedKV":
        return self

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors to store, named `<prefix>.codes`, `<prefix>.scale`, `<prefix>.zero` (and
        `<prefix>.outlier_index`, `<prefix>.outlier_values` with outlier channels)."""
        stored = {f"{prefix}.codes": self.codes, f"{prefix}.scale": self.scale, f"{prefix}.zero": self.zero}
        if self.outlier_index is not None:
            stored[f"{prefix}.outlier_index"] = self.outlier_index
            stored[f"{prefix}.outlier_values"] = self.outlier_values
        return stored

    def nbytes(self) -> int:
        """Bytes of the stored codes, scales, zero points and outlier channels."""
        return sum(t.numel() * t.element_size() for t in self.tensors("").values())


def kv_nbytes_of(kv: "torch.Tensor | QuantizedKV") -> int:
    """Bytes a block's keys or values take in memory, whatever their storage format."""
    return kv.nbytes() if isinstance(kv, QuantizedKV) else kv.numel() * kv.element_size()


def coded_channels(outlier_index: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(..., D - c) the channels that are not outliers, in order, for (..., c) outlier channel indices."""
    coded = torch.ones(*outlier_index.shape[:-1], head_dim, dtype=torch.bool, device=outlier_index.device)
    coded.scatter_(-1, outlier_index.long(), False)
    order = torch.argsort((~coded).to(torch.int8), dim=-1, stable=True)  # coded channels first, each in order
    return order[..., : head_dim - outlier_index.shape[-1]]


@lru_cache(maxsize=16)
def _rotation_cpu(head_dim: int, kind: str) -> torch.Tensor:
    if kind not in ROTATIONS:
        raise ValueError(f"rotation {kind!r} is not known: use one of {list(ROTATIONS)} or None.")
    block = head_dim & -head_dim  # the largest power of two dividing head_dim: Hadamard blocks of that size
    hadamard = torch.ones(1, 1)
    while hadamard.shape[0] < block:  # Sylvester's construction
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    hadamard = torch.block_diag(*[hadamard / block**0.5] * (head_dim // block))  # (D, D), symmetric, orthonormal
    digest = hashlib.shake_256(f"lychee-kv-rotation:{kind}:{head_dim}".encode()).digest(head_dim)
    signs = torch.tensor([1.0 if byte & 1 else -1.0 for byte in digest])
    return signs[:, None] * hadamard  # Q = diag(signs) @ H: rows are rotated with x @ Q, restored with y @ Q.T


def rotation_matrix(head_dim: int, kind: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (D, D) orthogonal matrix that undoes rotation `kind` (`rotated @ matrix`); `matrix.T` applies it.

    Args:
        head_dim (`int`): D.
        kind (`str`): `"hadamard"` (randomized Walsh–Hadamard transform).
        device: where the matrix is wanted.
    """
    return _rotation_cpu(head_dim, kind).T.to(device)


def quantize(
    x: torch.Tensor,
    bits: int,
    group_size: int,
    per_channel: bool,
    slot_mask: torch.Tensor | None = None,
    rotation: str | None = None,
    outliers: int = 0,
) -> QuantizedKV:
    """Quantizes a (L, H, S, D) K or V tensor (see the module docstring for the scheme).

    Args:
        x (`torch.Tensor`): (L, H, S, D) float keys or values.
        bits (`int`): 8 or 4.
        group_size (`int`): elements per group along the grouped axis (slots per channel, or channels per slot).
        per_channel (`bool`): True: a scale per channel, groups along slots (KIVI's keys); False: per slot.
        slot_mask (`torch.BoolTensor`, *optional*): (S,) real slots; the others take a real slot's value first.
        rotation (`str`, *optional*): `"hadamard"` rotates each head vector first (undone when read).
        outliers (`int`): per layer and head, keep this many largest channels in float16 outside the codes.

    Returns:
        `QuantizedKV`.
    """
    shape = tuple(x.shape)
    x = x.detach().float()
    if slot_mask is not None and bool(slot_mask.any()) and not bool(slot_mask.all()):
        first_real = int(slot_mask.nonzero()[0, 0])
        x = torch.where(slot_mask.to(x.device)[None, None, :, None], x, x[:, :, first_real : first_real + 1, :])
    outlier_index = outlier_values = None
    if outliers:  # in the model's basis, before any rotation
        outlier_index = x.abs().amax(2).topk(min(outliers, shape[3]), dim=-1).indices.sort(-1).values  # (L, H, c)
        gather = outlier_index[:, :, None, :].expand(-1, -1, shape[2], -1)  # (L, H, S, c)
        kept = x.gather(3, gather)
        outlier_values = kept.to(torch.float16 if float(kept.abs().max()) < _FLOAT16_LIMIT else torch.float32)
        x = x.scatter(3, gather, torch.zeros_like(kept))  # the codes cover the other channels only
        if per_channel and rotation is None:  # per-channel codes: leave the float16 channels out altogether
            coded = coded_channels(outlier_index, shape[3])  # (L, H, D - c)
            x = x.gather(3, coded[:, :, None, :].expand(-1, -1, shape[2], -1))  # (L, H, S, D - c)
        outlier_index = outlier_index.to(torch.int16)
    if rotation is not None:
        x = x @ rotation_matrix(shape[3], rotation, x.device).T  # (L, H, S, D) in the rotated basis
    grouped_axis = x.transpose(2, 3) if per_channel else x  # (L, H, A, n): groups run along the last axis
    length = grouped_axis.shape[-1]
    group = effective_group_size(group_size, length)
    padding = -length % group
    if padding:  # repeat the last element: padding never widens a group's range
        grouped_axis = torch.cat([grouped_axis, grouped_axis[..., -1:].expand(*grouped_axis.shape[:-1], padding)], -1)
    groups = grouped_axis.reshape(*grouped_axis.shape[:-1], -1, group)  # (L, H, A, G, group)
    low, high = groups.amin(-1), groups.amax(-1)  # (L, H, A, G)
    meta_dtype = torch.float16 if float(groups.abs().max()) < _FLOAT16_LIMIT else torch.float32
    zero = low.to(meta_dtype)
    scale = ((high - low) / (2**bits - 1)).to(meta_dtype)
    # Codes are computed against the stored (rounded) scale and zero, so dequantization matches exactly.
    step = scale.float().clamp_min(torch.finfo(torch.float32).tiny)
    codes = ((groups - zero.float()[..., None]) / step[..., None]).round().clamp(0, 2**bits - 1).to(torch.uint8)
    codes = _pack(codes.reshape(*codes.shape[:-2], -1), bits)
    return QuantizedKV(
        codes.contiguous(),
        scale.contiguous(),
        zero.contiguous(),
        bits,
        group_size,
        per_channel,
        shape,
        rotation,
        None if outlier_index is None else outlier_index.contiguous(),
        None if outlier_values is None else outlier_values.contiguous(),
    )


def kv_nbytes(shape: tuple[int, int, int, int], bank_dtype: str) -> int:
    """Bytes that the keys plus values of one (L, H, S, D) block take in format `bank_dtype` (float16 scales)."""
    layers, heads, slots, head_dim = shape
    if bank_dtype in FLOAT_STORAGE:
        return 2 * layers * heads * slots * head_dim * FLOAT_STORAGE[bank_dtype].itemsize
    bits, total = QUANTIZED_BITS[bank_dtype], 0
    outliers = KEY_OUTLIERS[bank_dtype]
    total += layers * heads * outliers * (2 + slots * 2)  # int16 index + float16 values
    key_axis = head_dim - (outliers if KEY_PER_CHANNEL[bank_dtype] and KEY_ROTATION[bank_dtype] is None else 0)
    for group_size, (axis, length) in (
        (KEY_GROUP_SIZE[bank_dtype], (key_axis, slots)),
        (VALUE_GROUP_SIZE[bank_dtype], (slots, head_dim)),
    ):
        group = effective_group_size(group_size, length)
        groups = -(-length // group)
        total += layers * heads * axis * (groups * group * bits // 8 + 2 * 2 * groups)
    return total


def effective_group_size(group_size: int, length: int) -> int:
    """The group used along an axis of `length`: `group_size`, or the whole axis (rounded up to even, for int4's
    two codes per byte) when it is shorter."""
    return min(group_size, length + length % 2)


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (..., n) -> (..., n * bits / 8): int4 puts two codes in a byte (even index in the low half)."""
    if bits == 8:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def _unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], -1)
