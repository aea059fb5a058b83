"""lychee-hf: LycheeMemory for transformers.

Importing a class from the package (`from lychee_hf import LycheeMemoryForCausalLM`), or calling
`lychee_hf.load_default_model()` / `register_auto_classes()`, registers the Auto classes, so `AutoModelForCausalLM`
loads LycheeMemory checkpoints without `trust_remote_code`. The package itself imports lazily (PEP 562): the
`lychee-hf` command starts without loading torch or transformers until a command needs them.
"""

from importlib import import_module

__version__ = "0.1.0"  # the package version: pyproject.toml reads it from here

_MODEL_CLASSES = (
    "LycheeBlockTrace",
    "LycheeCompressor",
    "LycheeGate",
    "LycheeGenerateOutput",
    "LycheeMemoryBank",
    "LycheeMemoryBlock",
    "LycheeMemoryConfig",
    "LycheeMemoryForCausalLM",
    "LycheeTrace",
)
_FUNCTIONS = {"load_default_model": "default_model", "default_model_path": "default_model"}

__all__ = [*_MODEL_CLASSES, *_FUNCTIONS, "register_auto_classes"]


def register_auto_classes() -> None:
    """Registers `LycheeMemoryConfig` / `LycheeMemoryForCausalLM` with `AutoConfig` / `AutoModelForCausalLM`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .modeling import LycheeMemoryConfig, LycheeMemoryForCausalLM

    AutoConfig.register(LycheeMemoryConfig.model_type, LycheeMemoryConfig, exist_ok=True)
    AutoModelForCausalLM.register(LycheeMemoryConfig, LycheeMemoryForCausalLM, exist_ok=True)


def __getattr__(name: str):
    if name in _MODEL_CLASSES:
        register_auto_classes()
        value = getattr(import_module(".modeling", __name__), name)
    elif name in _FUNCTIONS:
        register_auto_classes()
        value = getattr(import_module(f".{_FUNCTIONS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
