"""Loading a LycheeMemory model and its tokenizer the way every entry point does (CLI, scale-out, examples).

The library's one loader: a path or Hub id (default: the embedded SmolLM2-135M model, built on first use), a dtype,
config overrides, and, under a multi-process launch, the main process first (a Hub download or the default's
build happens once) and the model placed on this process's device.
"""

from accelerate import PartialState

from .scale.distributed import distributed_state, place_model


def load_pretrained(
    model: str | None = None,
    dtype: str | None = None,
    quiet: bool = False,
    overrides: dict | None = None,
    state: PartialState | None = None,
):
    """The model and tokenizer at `model`, in eval mode.

    Args:
        model (`str`, *optional*): a checkpoint folder or Hub id (default: the embedded model).
        dtype (`str`, *optional*): `"float32"`, `"bfloat16"`, ... (default: the checkpoint's, `"auto"`).
        quiet (`bool`): no progress bars while loading or building the default.
        overrides (`dict`, *optional*): `LycheeMemoryConfig` fields to change (validated before building).
        state (`PartialState`, *optional*): under a multi-process launch, load in the main process first and put
            the model on `state.device`.

    Returns:
        `(LycheeMemoryForCausalLM, tokenizer)`.
    """
    import torch
    from transformers import AutoTokenizer

    from . import register_auto_classes
    from .modeling import LycheeMemoryForCausalLM

    register_auto_classes()  # the tokenizer's folder names the model classes in its config's auto_map
    if quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
    with (state or distributed_state()).main_process_first():  # several processes: the main one loads/builds first
        if model:
            path = model
        else:
            from .default_model import ensure_default_model

            path = ensure_default_model(verbose=not quiet)
        check_config_file(path)
        torch_dtype = getattr(torch, dtype) if dtype else "auto"
        loaded = LycheeMemoryForCausalLM.from_pretrained(path, dtype=torch_dtype, **(overrides or {}))
        tokenizer = AutoTokenizer.from_pretrained(path)
    loaded.eval()
    return (place_model(loaded, state) if state is not None else loaded), tokenizer


def check_config_file(path) -> None:
    """A local checkpoint's `config.json` must be a JSON object: otherwise an error that names the file (not a
    JSON or attribute error from deep inside `from_pretrained`)."""
    import json
    from pathlib import Path

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return  # a Hub id, or a folder without a config: from_pretrained says what is missing
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}): restore the checkpoint's config.json") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a {type(config).__name__}, not a JSON object: restore the checkpoint")
