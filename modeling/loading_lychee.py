"""Checks on what `LycheeMemoryForCausalLM.from_pretrained` is given, before and after it builds anything.

A folder that is not a LycheeMemory checkpoint (a stock Llama, a folder without `config.json`, a config without
`text_config`) must be refused before a model is built: a missing `text_config` would otherwise fall back to a
default backbone config of billions of parameters. A checkpoint that lacks weights (or holds foreign ones) must
not answer with randomly initialised layers.
"""

import os

from transformers import PreTrainedConfig

MODEL_TYPE = "lychee_memory"
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def check_checkpoint_config(source: str | os.PathLike, kwargs: dict) -> None:
    """Refuses `source` unless its `config.json` describes a LycheeMemory model with a backbone config.

    Args:
        source (`str` or `os.PathLike`): what `from_pretrained` was given (local folder or Hub id).
        kwargs (`dict`): `from_pretrained`'s keyword arguments (a `config` object, Hub options).
    """
    given = kwargs.get("config")
    if isinstance(given, PreTrainedConfig):
        if getattr(given, "model_type", None) != MODEL_TYPE:
            raise ValueError(
                f"config= is a {given.model_type!r} config, not a LycheeMemory one ({MODEL_TYPE!r}): build the "
                "model with LycheeMemoryForCausalLM.from_backbone(...) or `lychee-hf convert`."
            )
        return
    text = str(source)
    looks_local = text.startswith((".", "/", "~")) or os.path.isabs(text) or text.count("/") > 1 or "\\" in text
    if looks_local and not os.path.exists(os.path.expanduser(text)):
        raise FileNotFoundError(f"{source} does not exist: pass a LycheeMemory checkpoint folder or a Hub repo id")
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, kwargs.get("subfolder", ""), "config.json")):
        raise FileNotFoundError(
            f"{source} holds no config.json, so it is not a model checkpoint: pass a LycheeMemory checkpoint folder "
            "(e.g. one written by save_pretrained or `lychee-hf convert`)."
        )
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    config_dict, _ = PreTrainedConfig.get_config_dict(source, **hub_kwargs)
    found = config_dict.get("model_type")
    if found != MODEL_TYPE:
        raise ValueError(
            f"{source} is a {found!r} checkpoint, not a LycheeMemory one ({MODEL_TYPE!r}): convert it with "
            f"`lychee-hf convert {source} DESTINATION`, or build one in Python with "
            "LycheeMemoryForCausalLM.from_backbone(path, ...)."
        )
    if not isinstance(config_dict.get("text_config"), dict) or not config_dict["text_config"].get("model_type"):
        raise ValueError(
            f"{source}'s config.json has no backbone config (text_config with a model_type): the checkpoint is "
            "incomplete; save it again with save_pretrained, or rebuild it with from_backbone / `lychee-hf convert`."
        )


def check_loading_info(info: dict, source: str | os.PathLike) -> None:
    """Refuses a load that left weights uninitialised or ignored some of the checkpoint's (transformers' report).

    Args:
        info (`dict`): `from_pretrained(..., output_loading_info=True)`'s report.
        source (`str` or `os.PathLike`): the checkpoint, for the message.
    """
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(key) for key in info.get(kind) or [])
        if keys:
            shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise ValueError(
            f"{source} does not match the model it describes ({'; '.join(problems)}): such a model would answer "
            "with random weights. Use a complete checkpoint (save_pretrained / `lychee-hf convert` write one), or "
            "pass allow_missing_weights=True to load it anyway."
        )
