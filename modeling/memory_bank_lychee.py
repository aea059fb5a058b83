"""The compressed document: one K/V block per chunk, plus what made it. Data only, never model state."""

from dataclasses import dataclass, field

import torch


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


@dataclass
class LycheeMemoryBank:
    """A document compressed once, to answer many questions (`model.generate(input_ids=..., memory=bank)`).

    Attributes:
        blocks (`list[LycheeMemoryBlock]`): in document order.
        fingerprint (`dict`): the model settings that made the blocks; a model only reads banks whose
            fingerprint matches its own (`LycheeMemoryForCausalLM.memory_fingerprint()`).
    """

    blocks: list[LycheeMemoryBlock] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def num_tokens(self) -> int:
        """Document tokens the bank covers."""
        return self.blocks[-1].span[1] if self.blocks else 0

    def append(self, other: "LycheeMemoryBank") -> None:
        """Adds the blocks of `other` (the document's continuation, compressed by the same model) at the end."""
        if other.fingerprint != self.fingerprint:
            differing = sorted(
                k
                for k in set(self.fingerprint) | set(other.fingerprint)
                if self.fingerprint.get(k) != other.fingerprint.get(k)
            )
            raise ValueError(f"Cannot append a bank made with other settings (differs in: {', '.join(differing)}).")
        offset = self.num_tokens
        for block in other.blocks:
            start, end = block.span
            self.blocks.append(LycheeMemoryBlock(block.keys, block.values, block.mask, (start + offset, end + offset)))

    def check_compatible(self, expected_fingerprint: dict) -> None:
        """Raises `ValueError` naming every setting in which this bank differs from `expected_fingerprint`."""
        differing = [
            f"{key}: bank has {self.fingerprint.get(key)!r}, model has {expected_fingerprint.get(key)!r}"
            for key in sorted(set(self.fingerprint) | set(expected_fingerprint))
            if self.fingerprint.get(key) != expected_fingerprint.get(key)
        ]
        if differing:
            raise ValueError(
                "This memory bank was made by a different model or settings; recompress the document with this "
                "model. Differences: " + "; ".join(differing)
            )
