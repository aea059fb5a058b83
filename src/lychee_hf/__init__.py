"""lychee-hf: LycheeMemory for transformers. Importing it registers the Auto classes (no remote code needed)."""

from transformers import AutoConfig, AutoModelForCausalLM

from .modeling import (
    LycheeBlockTrace,
    LycheeCompressor,
    LycheeGate,
    LycheeGenerateOutput,
    LycheeMemoryBank,
    LycheeMemoryBlock,
    LycheeMemoryConfig,
    LycheeMemoryForCausalLM,
)

AutoConfig.register(LycheeMemoryConfig.model_type, LycheeMemoryConfig, exist_ok=True)
AutoModelForCausalLM.register(LycheeMemoryConfig, LycheeMemoryForCausalLM, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "LycheeBlockTrace",
    "LycheeCompressor",
    "LycheeGate",
    "LycheeGenerateOutput",
    "LycheeMemoryBank",
    "LycheeMemoryBlock",
    "LycheeMemoryConfig",
    "LycheeMemoryForCausalLM",
]
