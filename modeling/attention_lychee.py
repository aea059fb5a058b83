"""Memory-aware self-attention over a stock rotary decoder (Llama, Qwen2, Mistral).

`LycheeAttention` takes over a stock attention module's projections (same parameter names, so backbone
checkpoints load unchanged) and computes exactly what the stock module computes, unless the call carries a
`MemoryRouting`: then memory-token rows go through the compressor's own q/k/v projections and the layer's
pre-rotary keys and values of the requested rows are exported.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .compat_lychee import pop_cache


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates `x` (B, H, T, D) by `cos`/`sin` (B, T, D), the backbone's rotary embedding output."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, H_kv * groups, T, D), each kv head shared by `groups` query heads."""
    if groups == 1:
        return states
    batch, kv_heads, length, dim = states.shape
    return states[:, :, None].expand(batch, kv_heads, groups, length, dim).reshape(batch, -1, length, dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; `attention_mask` is additive (B, 1, T_q, T_k). Returns (B, T_q, H, D)."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T_q, T_k)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class LowRankDelta(nn.Module):
    """A memory projection kept as the backbone's weight plus a rank-r delta: W_base x + up(down(x)) + bias.

    Shapes: `down` (r, in), `up` (out, r), `bias` (out,). Starts (up = 0, bias = the backbone's) as an exact copy
    of the backbone's projection, as full memory projections do. The backbone's part W_base x comes in as a tensor
    (see `backbone_projection`): the backbone's projection may be quantized, wrapped by an adapter, or offloaded,
    and a module argument would be moved by accelerate's device hooks.

    Checkpoints written before the rename name the factors `lora_A` / `lora_B` (PEFT's own names, for weights that
    are no PEFT adapter): `LEGACY_NAMES` maps them, in `load_state_dict` (a pre-hook here) and in
    `LycheeMemoryForCausalLM.from_pretrained` (transformers' `key_mapping`, `LEGACY_KEY_MAPPING`).
    """

    LEGACY_NAMES = {"lora_A": "down", "lora_B": "up"}

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_load_state_dict_pre_hook(_rename_legacy_factors)

    def forward(self, hidden_states: torch.Tensor, backbone_output: torch.Tensor) -> torch.Tensor:
        """`backbone_output` (..., out) = W_base `hidden_states`, without the backbone's bias."""
        delta = nn.functional.linear(nn.functional.linear(hidden_states, self.down), self.up, self.bias)
        return backbone_output + delta


def _rename_legacy_factors(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` pre-hook: `<prefix>lora_A` / `lora_B` of an older checkpoint become `down` / `up`."""
    for old, new in LowRankDelta.LEGACY_NAMES.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


# `from_pretrained(key_mapping=...)` form of `LowRankDelta.LEGACY_NAMES`: checkpoint key pattern -> current name.
LEGACY_KEY_MAPPING = {
    rf"^(compressor\.layers\.\d+\.[qkv]_proj)\.{old}$": rf"\1.{new}" for old, new in LowRankDelta.LEGACY_NAMES.items()
}


def backbone_projection(base: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """W x of a backbone projection `base`, without its bias: the part a `LowRankDelta` adds its delta to.

    A plain `nn.Linear` with its weight at hand multiplies by that weight (bit-identical to the unquantized
    model). Anything else (a bitsandbytes `Linear4bit` / `Linear8bitLt`, a PEFT LoRA wrapper, a layer whose
    weights accelerate offloaded to CPU or disk) runs its own forward, which dequantizes, adds the active
    adapter or loads the weights, and the bias is taken off again.

    Args:
        base (`nn.Module`): the backbone's q/k/v projection of the layer.
        hidden_states (`torch.Tensor`): (B, M, in) the memory rows.

    Returns:
        `torch.Tensor`: (B, M, out).
    """
    if type(base) is nn.Linear and base.weight.device.type != "meta":
        return nn.functional.linear(hidden_states, base.weight)
    output = base(hidden_states)
    bias = getattr(base, "bias", None)
    if bias is None:
        return output
    if bias.device.type == "meta":  # offloaded: the bias exists only while `base` runs, and base(0) = W 0 + b = b
        bias = base(hidden_states.new_zeros(1, hidden_states.shape[-1]))[0]
    return output - bias.to(device=output.device, dtype=output.dtype)


class MemoryProjections(nn.Module):
    """The compressor's own q/k/v projections of one layer: full `nn.Linear`s or `LowRankDelta`s.

    Called through `forward` (never through its children directly) so that accelerate's hooks load offloaded
    weights and move the memory rows to the device this layer's weights execute on.
    """

    def __init__(self, q_proj: nn.Module, k_proj: nn.Module, v_proj: nn.Module):
        super().__init__()
        self.q_proj = q_proj
        self.k_proj = k_proj
        self.v_proj = v_proj

    def adds_to_backbone(self, name: str) -> bool:
        """Whether projection `name` is a delta over the backbone's projection (then `forward` needs its output)."""
        return isinstance(getattr(self, name), LowRankDelta)

    def forward(
        self, name: str, hidden_states: torch.Tensor, backbone_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Memory-token projection `name` ("q_proj", "k_proj" or "v_proj") of `hidden_states` (B, M, in).

        `backbone_output` is `backbone_projection` of the same rows, needed when `adds_to_backbone(name)`. The
        result has this module's dtype (the compressor may be kept in float32 under a float16 backbone).
        """
        own = getattr(self, name)
        dtype = next((p.dtype for p in own.parameters() if p.is_floating_point()), hidden_states.dtype)
        hidden_states = hidden_states.to(dtype)
        if isinstance(own, LowRankDelta):
            return own(hidden_states, backbone_output)
        return own(hidden_states)


class MemoryRouting:
    """Per-call instructions for `LycheeAttention` (never stored on a module).

    A plain class, not a dataclass: the layers fill `exported` in place, and FSDP2 (`fully_shard`) rebuilds a
    unit's dataclass arguments when gradients are on, which would leave every layer filling its own copy.

    Attributes:
        export_index (`torch.LongTensor`): sequence positions whose pre-rotary K/V every layer exports.
        projections (`nn.ModuleList`, *optional*): per-layer `MemoryProjections`; when given, the rows at
            `export_index` are memory tokens and are projected by them instead of the backbone's projections.
        exported (`dict`): filled by the layers: `layer_idx -> (keys, values)`, each (B, H_kv, len(export_index), D).
    """

    def __init__(self, export_index: torch.LongTensor, projections: nn.ModuleList | None = None):
        self.export_index = export_index
        self.projections = projections
        self.exported: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


@dataclass
class BlockStates:
    """A block prefix's per-layer K/V as a call argument, for layers that run without the cache (never stored).

    transformers' gradient-checkpointed decoder layers drop the cache in training, and with it a block
    read as prefix. `LycheeMemoryForCausalLM.forward(memory_blocks=...)` passes the same K/V both ways: a layer
    that still has the cache reads it there, a layer that lost it prepends these instead, so the result (and the
    gradient into the compressor) is the same with checkpointing on or off.

    Attributes:
        layers (`list[tuple[torch.Tensor, torch.Tensor]]`): per layer (keys, values), each (B, H_kv, S, D), keys
            already rotated as the cache holds them.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]


class LycheeAttention(nn.Module):
    """Stock-compatible rotary self-attention with optional memory-token routing and pre-rotary K/V export."""

    def __init__(self, stock_attention: nn.Module):
        super().__init__()
        self.config = stock_attention.config
        self.layer_idx = stock_attention.layer_idx
        self.head_dim = stock_attention.head_dim
        self.num_key_value_groups = stock_attention.num_key_value_groups
        self.scaling = stock_attention.scaling
        self.attention_dropout = stock_attention.attention_dropout
        self.is_causal = True
        # Qwen2 stores the window per layer; Mistral reads it from its config at call time.
        if hasattr(stock_attention, "sliding_window"):
            self.sliding_window = stock_attention.sliding_window
        else:
            self.sliding_window = getattr(self.config, "sliding_window", None)
        self.q_proj = stock_attention.q_proj
        self.k_proj = stock_attention.k_proj
        self.v_proj = stock_attention.v_proj
        self.o_proj = stock_attention.o_proj

    def _project(
        self, hidden_states: torch.Tensor, routing: MemoryRouting | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query, key, value = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        if routing is None or routing.projections is None:
            return query, key, value
        # Only the memory rows need the memory projections: project them alone and write them over the
        # backbone's result (out of place, so gradients reach both projection sets).
        index = routing.export_index.to(hidden_states.device)
        memory_rows = hidden_states.index_select(1, index)  # (B, M, hidden)
        own = routing.projections[self.layer_idx]
        query = query.index_copy(1, index, self._memory_projection(own, "q_proj", memory_rows))
        key = key.index_copy(1, index, self._memory_projection(own, "k_proj", memory_rows))
        value = value.index_copy(1, index, self._memory_projection(own, "v_proj", memory_rows))
        return query, key, value

    def _memory_projection(self, own: MemoryProjections, name: str, memory_rows: torch.Tensor) -> torch.Tensor:
        """`own`'s projection `name` of `memory_rows` (B, M, hidden), back on this layer's device and dtype.

        `own` may live on another device than this layer (a device map that does not pair `compressor.layers.i`
        with `model.layers.i`, or offloading): it runs where accelerate executes it and only the small memory
        rows travel.
        """
        base = getattr(self, name)
        backbone_output = backbone_projection(base, memory_rows) if own.adds_to_backbone(name) else None
        return own(name, memory_rows, backbone_output).to(device=memory_rows.device, dtype=memory_rows.dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        memory_routing: MemoryRouting | None = None,
        block_states: BlockStates | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = pop_cache(kwargs)  # the decoder layer passes it as `cache` (5.24+) or `past_key_values`
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query, key, value = self._project(hidden_states, memory_routing)
        query = query.view(hidden_shape).transpose(1, 2)  # (B, H, T, D)
        key = key.view(hidden_shape).transpose(1, 2)  # (B, H_kv, T, D)
        value = value.view(hidden_shape).transpose(1, 2)

        if memory_routing is not None:
            # Blocks are stored with keys before rotary embedding: the reasoner decides their positions.
            index = memory_routing.export_index.to(key.device)
            memory_routing.exported[self.layer_idx] = (key.index_select(2, index), value.index_select(2, index))

        cos, sin = position_embeddings
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        elif block_states is not None:  # a checkpointed layer in training: the cache holding the block was dropped
            prefix_key, prefix_value = block_states.layers[self.layer_idx]
            key = torch.cat([prefix_key.to(key), key], dim=2)
            value = torch.cat([prefix_value.to(value), value], dim=2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        output = self.o_proj(output.reshape(*input_shape, -1).contiguous())
        return output, weights


def install_lychee_attention(backbone: nn.Module) -> None:
    """Replaces every decoder layer's stock attention of `backbone` (a base decoder model) by `LycheeAttention`."""
    for layer in backbone.layers:
        if not isinstance(layer.self_attn, LycheeAttention):
            layer.self_attn = LycheeAttention(layer.self_attn)
