"""Memory-aware self-attention over a stock rotary decoder (Llama, Qwen2, Mistral).

`LycheeAttention` takes over a stock attention module's projections (same parameter names, so backbone
checkpoints load unchanged) and computes exactly what the stock module computes, unless the call carries a
`MemoryRouting`: then memory-token rows go through the compressor's own q/k/v projections and the layer's
pre-rotary keys and values of the requested rows are exported.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


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
    """A memory projection kept as the backbone's weight plus a rank-r delta: W_base x + B (A x) + bias.

    Shapes: `lora_A` (r, in), `lora_B` (out, r), `bias` (out,). Starts (B = 0, bias = the backbone's) as an exact
    copy of the backbone's projection, as full memory projections do.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, hidden_states: torch.Tensor, base: nn.Linear) -> torch.Tensor:
        delta = nn.functional.linear(nn.functional.linear(hidden_states, self.lora_A), self.lora_B, self.bias)
        return nn.functional.linear(hidden_states, base.weight) + delta


class MemoryProjections(nn.Module):
    """The compressor's own q/k/v projections of one layer: full `nn.Linear`s or `LowRankDelta`s."""

    def __init__(self, q_proj: nn.Module, k_proj: nn.Module, v_proj: nn.Module):
        super().__init__()
        self.q_proj = q_proj
        self.k_proj = k_proj
        self.v_proj = v_proj

    def project(self, name: str, hidden_states: torch.Tensor, base: nn.Linear) -> torch.Tensor:
        """Memory-token projection `name` ("q_proj", ...) of `hidden_states`; `base` is the backbone's."""
        own = getattr(self, name)
        return own(hidden_states, base) if isinstance(own, LowRankDelta) else own(hidden_states)


@dataclass
class MemoryRouting:
    """Per-call instructions for `LycheeAttention` (never stored on a module).

    Attributes:
        export_index (`torch.LongTensor`): sequence positions whose pre-rotary K/V every layer exports.
        projections (`nn.ModuleList`, *optional*): per-layer `MemoryProjections`; when given, the rows at
            `export_index` are memory tokens and are projected by them instead of the backbone's projections.
        exported (`dict`): filled by the layers: `layer_idx -> (keys, values)`, each (B, H_kv, len(export_index), D).
    """

    export_index: torch.LongTensor
    projections: nn.ModuleList | None = None
    exported: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


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
        index = routing.export_index
        memory_rows = hidden_states.index_select(1, index)  # (B, M, hidden)
        own = routing.projections[self.layer_idx]
        query = query.index_copy(1, index, own.project("q_proj", memory_rows, self.q_proj))
        key = key.index_copy(1, index, own.project("k_proj", memory_rows, self.k_proj))
        value = value.index_copy(1, index, own.project("v_proj", memory_rows, self.v_proj))
        return query, key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        memory_routing: MemoryRouting | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query, key, value = self._project(hidden_states, memory_routing)
        query = query.view(hidden_shape).transpose(1, 2)  # (B, H, T, D)
        key = key.view(hidden_shape).transpose(1, 2)  # (B, H_kv, T, D)
        value = value.view(hidden_shape).transpose(1, 2)

        if memory_routing is not None:
            # Blocks are stored with keys before rotary embedding: the reasoner decides their positions.
            index = memory_routing.export_index
            memory_routing.exported[self.layer_idx] = (key.index_select(2, index), value.index_select(2, index))

        cos, sin = position_embeddings
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)

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
