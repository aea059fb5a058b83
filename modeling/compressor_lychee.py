"""LycheeCompressor: turns chunks of a document into compact K/V blocks with the shared backbone.

Memory-token mode (the authors' scheme): each compression window of raw tokens gets memory ("beacon") tokens,
one after every `compression_ratio` raw tokens (interleave) or all after the window (append). Memory tokens
have their own embedding and q/k/v projections; every other weight is the backbone's. Attention is plain causal
over [earlier windows' memory tokens, this window's slots] ("full-coverage"), positions count memory tokens and
skip padding, every chunk starts from a fresh state, and only the memory tokens' keys (before rotary
embedding) and values are kept.

Lossless mode: the block is the chunk's own K/V (no memory tokens). `read_losslessly` computes that block in either
mode (`forward(..., lossless=True)`), e.g. as the teacher that memory tokens are distilled towards.
"""

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from .attention_lychee import BlockStates, LowRankDelta, MemoryProjections, MemoryRouting, apply_rotary
from .compat_lychee import cache_kwargs
from .configuration_lychee import LycheeMemoryConfig, backbone_head_dim
from .pretrained_lychee import LycheePreTrainedModel


def memory_token_layout(window: int, ratio: int, placement: str) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Slot indices of a window's raw tokens and memory tokens.

    Interleave with ratio 4: slots 0-3 raw, 4 memory, 5-8 raw, 9 memory, ... (slot i is a memory token iff
    i mod 5 == 4). Append: raw tokens at 0..window-1, memory tokens after them.

    Returns:
        `(raw_slots, memory_slots)`: LongTensors of length `window` and `window // ratio`.
    """
    raw = torch.arange(window)
    memory = torch.arange(window // ratio)
    if placement == "interleave":
        return raw + raw // ratio, (memory + 1) * (ratio + 1) - 1
    return raw, memory + window


def attention_bias(text_config) -> bool:
    """Whether the backbone's q/k/v projections carry a bias (Qwen2 always; Llama/Mistral per config)."""
    return text_config.model_type == "qwen2" or bool(getattr(text_config, "attention_bias", False))


def positions_from_mask(mask: torch.Tensor) -> torch.LongTensor:
    """Positions that skip padding: cumsum(mask) - 1, clamped at 0 (the authors' flash-attention rule)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class LycheeCompressor(LycheePreTrainedModel):
    """Memory-token embedding and per-layer memory q/k/v projections; compresses chunks with a given backbone.

    The backbone is an argument, not a submodule: `LycheeMemoryForCausalLM` owns the one backbone that every
    role shares.
    """

    # A layer's memory q/k/v projections stay together on one device (device maps name `compressor.layers.i`).
    _no_split_modules = ["MemoryProjections"]

    def __init__(self, config: LycheeMemoryConfig):
        super().__init__(config)
        text = config.text_config
        head_dim = backbone_head_dim(text)
        bias, rank = attention_bias(text), config.memory_projection_rank
        q_out, kv_out = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim

        def projection(out_features: int) -> nn.Module:
            if rank is None:
                return nn.Linear(text.hidden_size, out_features, bias=bias)
            return LowRankDelta(text.hidden_size, out_features, rank, bias)

        self.memory_embedding = nn.Embedding(1, text.hidden_size)
        self.layers = nn.ModuleList(
            MemoryProjections(q_proj=projection(q_out), k_proj=projection(kv_out), v_proj=projection(kv_out))
            for _ in range(text.num_hidden_layers)
        )
        self.post_init()

    def initialize_from_backbone(self, backbone: nn.Module, eos_token_id: int) -> None:
        """The authors' loader defaults: memory embedding = eos embedding, memory q/k/v = copies of the backbone's."""
        with torch.no_grad():
            self.memory_embedding.weight.copy_(backbone.embed_tokens.weight[eos_token_id][None])
            for own, layer in zip(self.layers, backbone.layers):
                for name in ("q_proj", "k_proj", "v_proj"):
                    mine, base = getattr(own, name), getattr(layer.self_attn, name)
                    if isinstance(mine, LowRankDelta):  # zero delta: the backbone's projection exactly
                        mine.up.zero_()
                        if mine.bias is not None:
                            mine.bias.copy_(base.bias)
                    else:
                        mine.load_state_dict(base.state_dict())

    def forward(
        self, backbone: nn.Module, chunk_ids: torch.LongTensor, chunk_mask: torch.Tensor, lossless: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.BoolTensor]:
        """Compresses a batch of chunks, each from a fresh state. Keeps gradients (call under no_grad to drop them).

        Args:
            backbone (`nn.Module`): the base decoder (with `LycheeAttention` installed).
            chunk_ids (`torch.LongTensor`): (N, chunk_size), right-padded.
            chunk_mask (`torch.Tensor`): (N, chunk_size), 1 for real tokens.
            lossless (`bool`, *optional*, defaults to `False`): the chunks' own K/V (`read_losslessly`) whatever
                `config.compression_mode` says.

        Returns:
            `(keys, values, slot_mask)`: keys and values (N, num_layers, H_kv, slots, D) before rotary embedding,
            slot_mask (N, slots) bool.
        """
        if lossless or self.config.compression_mode == "lossless":
            return self.read_losslessly(backbone, chunk_ids, chunk_mask)
        return self._compress_with_memory_tokens(backbone, chunk_ids, chunk_mask)

    @staticmethod
    def read_losslessly(
        backbone: nn.Module, chunk_ids: torch.LongTensor, chunk_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.BoolTensor]:
        """The lossless block of each chunk: every real token's own keys (before rotary embedding) and values.

        Uses the backbone only (no memory weights), so it is the same in either `compression_mode`.

        Args:
            backbone (`nn.Module`): the base decoder (with `LycheeAttention` installed).
            chunk_ids (`torch.LongTensor`): (N, chunk_size), right-padded.
            chunk_mask (`torch.Tensor`): (N, chunk_size), 1 for real tokens.

        Returns:
            `(keys, values, slot_mask)`: (N, num_layers, H_kv, chunk_size, D) twice, and chunk_mask as bool.
        """
        routing = MemoryRouting(export_index=torch.arange(chunk_ids.shape[1], device=chunk_ids.device))
        backbone(
            input_ids=chunk_ids,
            attention_mask=chunk_mask,
            position_ids=positions_from_mask(chunk_mask),
            use_cache=False,
            memory_routing=routing,
        )
        keys, values = _stack_layers(routing.exported, chunk_ids.device)
        return keys, values, chunk_mask.bool()

    def _compress_with_memory_tokens(self, backbone, chunk_ids, chunk_mask):
        config = self.config
        window, ratio = config.compression_window, config.compression_ratio
        raw_slots, memory_slots = (
            t.to(chunk_ids.device) for t in memory_token_layout(window, ratio, config.memory_token_placement)
        )
        batch = chunk_ids.shape[0]
        prefix: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # per layer, on that layer's device
        slot_masks = []
        for start in range(0, config.chunk_size, window):
            ids, mask = chunk_ids[:, start : start + window], chunk_mask[:, start : start + window]
            routing = self._run_window(backbone, ids, mask, raw_slots, memory_slots, prefix)
            for layer_idx, kv in routing.exported.items():
                prefix.setdefault(layer_idx, []).append(kv)
            # A memory slot is valid when any of the `ratio` raw tokens it summarises is real.
            slot_masks.append(mask.view(batch, -1, ratio).bool().any(-1))
        merged = {
            idx: (torch.cat([k for k, _ in kvs], 2), torch.cat([v for _, v in kvs], 2)) for idx, kvs in prefix.items()
        }
        keys, values = _stack_layers(merged, chunk_ids.device)
        return keys, values, torch.cat(slot_masks, dim=1)

    def _run_window(self, backbone, ids, mask, raw_slots, memory_slots, prefix) -> MemoryRouting:
        batch, window = ids.shape
        num_slots = window + memory_slots.numel()
        raw_embeds = backbone.embed_tokens(ids)  # (B, W, hidden)
        # Through the embedding's forward (not its weight), so that an offloaded embedding gets loaded.
        memory_embed = self.memory_embedding(memory_slots.new_zeros(1))[0].to(raw_embeds)  # (hidden,)
        memory_embeds = memory_embed.expand(batch, memory_slots.numel(), -1)
        embeds = raw_embeds.new_zeros(batch, num_slots, raw_embeds.shape[-1])
        embeds = embeds.index_copy(1, raw_slots, raw_embeds).index_copy(1, memory_slots, memory_embeds)

        # Memory tokens always count as real: they take positions even inside padding, raw padding does not.
        slot_mask = mask.new_ones(batch, num_slots).index_copy(1, raw_slots, mask)
        prefix_len = sum(k.shape[2] for k, _ in prefix.get(0, []))
        full_mask = torch.cat([slot_mask.new_ones(batch, prefix_len), slot_mask], dim=1)
        positions = positions_from_mask(full_mask)  # (B, P + S): earlier memory tokens at 0..P-1
        layers = self._prefix_layers(backbone, prefix, positions[:, :prefix_len]) if prefix_len else None
        # As in the reasoner's forward: checkpointed layers in training drop the cache and read `block_states`.
        cache = DynamicCache(ddp_cache_data=layers) if layers else None
        states = BlockStates(layers) if layers else None

        routing = MemoryRouting(export_index=memory_slots, projections=self.layers)
        hidden = backbone(
            inputs_embeds=embeds,
            attention_mask=full_mask,
            position_ids=positions[:, prefix_len:],
            **cache_kwargs(cache),
            use_cache=False,
            memory_routing=routing,
            block_states=states,
        ).last_hidden_state
        if hidden.requires_grad:
            # The K/V leave the layers by `routing`, not as outputs, and nothing reads the last layer's output: tie
            # it in with an exact zero (an empty sum), so that the gradient passes through every layer's output.
            # FSDP2 gathers a sharded layer's weights for backward when its output gets a gradient.
            last = max(routing.exported)
            keys, values = routing.exported[last]
            routing.exported[last] = (keys + hidden[:, :0].sum().to(keys), values)
        return routing

    @staticmethod
    def _prefix_layers(backbone, prefix, prefix_positions) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Earlier windows' memory K/V per layer, keys rotated at their new compact positions.

        Each layer's K/V stay on the device of the layer that exported them (the layer that reads them next).
        """
        values0 = prefix[0][0][1]
        cos, sin = backbone.rotary_emb(values0, prefix_positions.to(values0.device))  # (B, P, D)
        layers = []
        for layer_idx in range(len(prefix)):
            keys = torch.cat([k for k, _ in prefix[layer_idx]], dim=2)  # (B, H_kv, P, D)
            values = torch.cat([v for _, v in prefix[layer_idx]], dim=2)
            layers.append((apply_rotary(keys, cos.to(keys.device), sin.to(keys.device)), values))
        return layers


def _stack_layers(
    exported: dict[int, tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """{layer: (B, H, S, D)}, each on its layer's device -> two (B, num_layers, H, S, D) tensors on `device`."""
    order = sorted(exported)
    keys = torch.stack([exported[i][0].to(device) for i in order], dim=1)
    values = torch.stack([exported[i][1].to(device) for i in order], dim=1)
    return keys, values
