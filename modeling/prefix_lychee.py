"""A batch of blocks as attention prefix: a fresh prefilled cache placed by the configured position scheme."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from .attention_lychee import BlockStates, apply_rotary
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

    def block_states(self) -> BlockStates:
        """The same K/V as a per-layer argument, for decoder layers that run without the cache (checkpointing)."""
        return BlockStates([(layer.keys, layer.values) for layer in self.cache.layers])

    def forward_inputs(self, prompt_mask: torch.Tensor) -> dict:
        """`attention_mask` over [slots, prompt] and the prompt's own `position_ids`, for a direct forward."""
        return {
            "attention_mask": torch.cat([self.slot_mask.long(), prompt_mask.long()], dim=1),
            "position_ids": self.prompt_start + positions_from_mask(prompt_mask),
        }


def execution_device(module: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device `module` computes on.

    Under a device map, accelerate's hook names it (`module._hf_hook.execution_device`, also inside a chain of
    hooks); that is the only answer for offloaded weights, which sit on the meta device between calls. Otherwise
    it is where the module's weights are.

    Args:
        module (`nn.Module`): e.g. a decoder layer.
        default (`torch.device`, *optional*): the answer when neither a hook nor a materialized weight tells
            (a module with no weights of its own, offloaded as part of a larger module); CPU if not given.
    """
    hook = getattr(module, "_hf_hook", None)
    for single in getattr(hook, "hooks", (hook,)):  # a SequentialHook chains several hooks
        device = getattr(single, "execution_device", None)
        if device is not None:
            return torch.device(device)  # accelerate may give a CUDA index as a plain int
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return default if default is not None else torch.device("cpu")


def layer_devices(backbone: nn.Module) -> list[torch.device]:
    """The execution device of each decoder layer of `backbone` (a base decoder with `.layers`).

    A block's K/V of layer i go there: the cache layer i is read and extended by decoder layer i only.
    """
    fallback = execution_device(backbone)
    return [execution_device(layer, fallback) for layer in backbone.layers]


def block_prefix(model, blocks: list[LycheeMemoryBlock]) -> BlockPrefix:
    """Stacks `blocks` in the model's dtype, layer i's K/V on layer i's device, placed by `config.position_scheme`.

    Blocks may live anywhere (CPU, another device, just read from disk) and in any storage format: each layer's
    slice moves to its decoder layer's device here, when the block is read, and is dequantized there (int8/int4),
    so a model split across devices reads a bank kept on the host, and never holds more than these blocks in
    full precision.
    Masks and positions go to `model.device`, where the prompt is.

    `reference`: the authors' reasoner never rotates block keys (every slot acts as position 0) and starts the
    prompt after every slot, masked ones included. `sequential`: valid slots are rotated at 0..n-1 and the
    prompt starts at n, which for lossless blocks is exactly reading the chunk as text.
    """
    device, dtype = model.device, model.dtype
    devices = layer_devices(model.model)
    keys, values = [], []
    for i, d in enumerate(devices):  # int8/int4 blocks are dequantized here, one layer at a time, on its device
        layer = [b.layer(i, d, dtype) for b in blocks]
        keys.append(torch.stack([k for k, _ in layer]))  # (B, H_kv, S, D)
        values.append(torch.stack([v for _, v in layer]))
    slot_mask = torch.stack([b.mask for b in blocks]).to(device)  # (B, S)
    batch, slots = slot_mask.shape
    if model.config.position_scheme == "reference":
        layers = list(zip(keys, values))  # each (B, H_kv, S, D), un-rotated
        positions = torch.arange(slots, device=device).expand(batch, slots)
        prompt_start = torch.full((batch, 1), slots, device=device)
    else:
        positions = positions_from_mask(slot_mask)
        cos, sin = model.model.rotary_emb(values[0], positions.to(devices[0]))  # (B, S, D)
        layers = [(apply_rotary(k, cos.to(k.device), sin.to(k.device)), v) for k, v in zip(keys, values)]
        prompt_start = slot_mask.long().sum(dim=1, keepdim=True)
    return BlockPrefix(DynamicCache(ddp_cache_data=layers), slot_mask, positions, prompt_start)
