"""A batch of blocks as attention prefix: a fresh prefilled cache placed by the configured position scheme."""

from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from .attention_lychee import apply_rotary
from .compressor_lychee import positions_from_mask
from .memory_bank_lychee import LycheeMemoryBlock


@dataclass
class BlockPrefix:
    """What a forward or `generate` call needs to read blocks as prefix.

    Attributes:
        cache (`DynamicCache`): the blocks' K/V, keys rotated per the scheme; new for every call (calls grow it).
        slot_mask (`torch.BoolTensor`): (B, S) valid slots.
        positions (`torch.LongTensor`): (B, S) the slots' positions (for full-length `position_ids`).
        prompt_start (`torch.LongTensor`): (B, 1) position of the first prompt token.
    """

    cache: DynamicCache
    slot_mask: torch.Tensor
    positions: torch.LongTensor
    prompt_start: torch.LongTensor

    def generate_inputs(self, prompt_mask: torch.Tensor) -> dict:
        """`attention_mask` and `position_ids` over [slots, prompt] for `generate` ((B, L) left-padded prompt).

        `generate` takes position ids at full length (slots + L) and slices them itself; ids of the prompt alone
        break its chunked prefill.
        """
        inputs = self.forward_inputs(prompt_mask)
        inputs["position_ids"] = torch.cat([self.positions, inputs["position_ids"]], dim=1)
        return inputs

    def forward_inputs(self, prompt_mask: torch.Tensor) -> dict:
        """`attention_mask` over [slots, prompt] and the prompt's own `position_ids`, for a direct forward."""
        return {
            "attention_mask": torch.cat([self.slot_mask.long(), prompt_mask.long()], dim=1),
            "position_ids": self.prompt_start + positions_from_mask(prompt_mask),
        }


def block_prefix(model, blocks: list[LycheeMemoryBlock]) -> BlockPrefix:
    """Stacks `blocks` on the model's device and dtype and places them by `model.config.position_scheme`.

    `reference`: the authors' reasoner never rotates block keys (every slot acts as position 0) and starts the
    prompt after every slot, masked ones included. `sequential`: valid slots are rotated at 0..n-1 and the
    prompt starts at n, which for lossless blocks is exactly reading the chunk as text.
    """
    device, dtype = model.device, model.dtype
    keys = torch.stack([b.keys for b in blocks]).to(device=device, dtype=dtype)  # (B, L, H, S, D)
    values = torch.stack([b.values for b in blocks]).to(device=device, dtype=dtype)
    slot_mask = torch.stack([b.mask for b in blocks]).to(device)
    batch, slots = slot_mask.shape
    if model.config.position_scheme == "reference":
        layers = [(keys[:, i], values[:, i]) for i in range(keys.shape[1])]
        positions = torch.arange(slots, device=device).expand(batch, slots)
        prompt_start = torch.full((batch, 1), slots, device=device)
    else:
        positions = positions_from_mask(slot_mask)
        cos, sin = model.model.rotary_emb(values[:, 0], positions)
        layers = [(apply_rotary(keys[:, i], cos, sin), values[:, i]) for i in range(keys.shape[1])]
        prompt_start = slot_mask.long().sum(dim=1, keepdim=True)
    return BlockPrefix(DynamicCache(ddp_cache_data=layers), slot_mask, positions, prompt_start)
