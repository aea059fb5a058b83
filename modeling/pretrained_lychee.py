"""LycheePreTrainedModel: the base class of the compressor, the gates and the full model (class attributes and
weight initialisation only)."""

from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .attention_lychee import LowRankDelta
from .compat_lychee import CACHE_ARG, LEGACY_CACHE_ARG
from .configuration_lychee import LycheeMemoryConfig


class LycheePreTrainedModel(PreTrainedModel):
    config_class = LycheeMemoryConfig
    config: LycheeMemoryConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # accelerate's device hooks move every tensor-like argument, modules included (`Module.to`): the compressor's
    # `backbone` argument must stay where it is (pass it by keyword; positional arguments cannot be skipped).
    _skip_keys_device_placement = sorted({CACHE_ARG, LEGACY_CACHE_ARG, "backbone"})

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LowRankDelta):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            init.normal_(module.down, mean=0.0, std=std)
            init.zeros_(module.up)
            if module.bias is not None:
                init.zeros_(module.bias)
