"""LycheeMemory model classes: the Hub remote code, also installed as `lychee_hf.modeling` (one copy)."""

from .compressor_lychee import LycheeCompressor
from .configuration_lychee import LycheeMemoryConfig
from .gate_lychee import LycheeGate
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock
from .modeling_lychee import LycheeMemoryForCausalLM
from .pretrained_lychee import LycheePreTrainedModel
from .reasoner_lychee import LycheeBlockTrace, LycheeGenerateOutput, LycheeTrace

__all__ = [
    "LycheeBlockTrace",
    "LycheeCompressor",
    "LycheeGate",
    "LycheeGenerateOutput",
    "LycheeMemoryBank",
    "LycheeMemoryBlock",
    "LycheeMemoryConfig",
    "LycheeMemoryForCausalLM",
    "LycheePreTrainedModel",
    "LycheeTrace",
]
