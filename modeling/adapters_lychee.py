"""Named PEFT adapters, one per role: `compressor`, `gate` and `reasoner` over the one shared backbone.

A checkpoint folder holds the backbone (plus the compressor's memory-token embedding and projections) and, for
each role that has one, a PEFT adapter in the subfolder of that name, the layout `PeftModel.save_pretrained` uses
for named adapters (`<folder>/<role>/adapter_config.json` + `adapter_model.safetensors`). `generate` runs each
phase with its role's adapter active and every other adapter off: compression with `compressor`, gating with
`gate`, memory updates and the final answer with `reasoner`. A role without an adapter runs the plain backbone.

Everything here goes through peft's own public API (`inject_adapter_in_model`, `set_peft_model_state_dict`,
`get_peft_model_state_dict`, and the tuner layers' `set_adapter` / `enable_adapters`), never through transformers'
PEFT integration methods (`model.load_adapter`, `set_adapter`, ...): those check a minimum peft version that a
transformers release can raise past the newest peft (5.24 asked for peft 0.22 before it was released), which
would lock every role adapter out. Adapters added by `peft.get_peft_model(model, config, adapter_name=...)` or by
transformers' integration (where it runs) are tuner layers too, and work the same. peft stays optional: without
it there are no adapters.
"""

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

ROLES = ("compressor", "gate", "reasoner")

# LoRA targets for a role adapter: the decoder's own linear layers, never the compressor's memory projections
# (those are the compressor's full weights or low-rank deltas already).
BACKBONE_LORA_TARGETS = r".*model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def tuner_layers(model: nn.Module) -> list[nn.Module]:
    """The PEFT tuner layers (LoRA and the like) inside `model`; empty without peft or adapters."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


def _layer_adapters(layer: nn.Module) -> set[str]:
    names = set()
    for attribute in layer.adapter_layer_names:
        names.update(getattr(layer, attribute).keys())
    return names


def adapter_names(model: nn.Module) -> list[str]:
    """The names of the adapters loaded into `model`, sorted."""
    names = set()
    for layer in tuner_layers(model):
        names |= _layer_adapters(layer)
    return sorted(names)


def check_adapter_names(model: nn.Module) -> None:
    """Refuses adapters whose name is not a role: `generate` could not tell when to use them."""
    unknown = [name for name in adapter_names(model) if name not in ROLES]
    if unknown:
        raise ValueError(
            f"Adapter(s) {unknown} are not LycheeMemory roles {list(ROLES)}: generate activates an adapter only "
            "in its role's phase. Name it after its role, e.g. peft.get_peft_model(model, lora_config, "
            "adapter_name='reasoner') or model.load_role_adapter(path, 'gate')."
        )


@contextmanager
def role_adapter(model: nn.Module, role: str | None) -> Iterator[None]:
    """Within the block, only `role`'s adapter is active (none if it has none, or if `role` is `None`); the
    previous state comes back.

    Trainability (`requires_grad`) of every adapter weight is restored too: PEFT's `set_adapter` marks the active
    adapter trainable, which must not leak into a training run that only reads another role's output.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; roles are {list(ROLES)}.")
    layers = tuner_layers(model)
    if not layers:
        yield
        return
    with _keeping_trainability(layers):
        saved = _adapter_state(layers)
        try:
            _activate(layers, role)
            yield
        finally:
            _apply_adapter_state(saved)


def activate_role_adapter(model: nn.Module, role: str | None) -> None:
    """From now on only `role`'s adapter is active (`None`: every adapter off), trainability unchanged.

    What the model runs as outside `generate`'s phases (a plain forward, chat, training a role's adapter).
    """
    if role is not None and role not in adapter_names(model):
        raise ValueError(f"This model has no {role!r} adapter (it has {adapter_names(model)}).")
    layers = tuner_layers(model)
    with _keeping_trainability(layers):
        _activate(layers, role)


def _activate(layers: list[nn.Module], role: str | None) -> None:
    for layer in layers:
        if role in _layer_adapters(layer):
            layer.set_adapter(role)
            layer.enable_adapters(True)
        else:
            layer.enable_adapters(False)


def checkpoint_context_fn(model: nn.Module) -> Callable[[], tuple[AbstractContextManager, AbstractContextManager]]:
    """A `context_fn` for `torch.utils.checkpoint`: recomputation runs with the adapters of its forward pass.

    Activation checkpointing recomputes a layer during backward, after `role_adapter` has switched the adapters
    back; without this, a compression pass (compressor role) would be recomputed with the reasoner adapter on and
    torch would refuse the mismatch (or, worse, differentiate another function). The snapshot is taken when the
    checkpointed layer runs forward and reapplied around its recomputation.
    """

    def context_fn() -> tuple[AbstractContextManager, AbstractContextManager]:
        layers = tuner_layers(model)
        if not layers:
            return nullcontext(), nullcontext()
        return nullcontext(), _adapter_state_applied(layers, _adapter_state(layers))

    return context_fn


AdapterState = list[tuple[nn.Module, list[str], bool]]


def _adapter_state(layers: list[nn.Module]) -> AdapterState:
    return [(layer, list(layer.active_adapters), bool(layer.disable_adapters)) for layer in layers]


def _apply_adapter_state(state: AdapterState) -> None:
    for layer, active, disabled in state:
        layer.set_adapter(active)
        layer.enable_adapters(not disabled)


@contextmanager
def _adapter_state_applied(layers: list[nn.Module], state: AdapterState) -> Iterator[None]:
    with _keeping_trainability(layers):
        current = _adapter_state(layers)
        _apply_adapter_state(state)
        try:
            yield
        finally:
            _apply_adapter_state(current)


@contextmanager
def _keeping_trainability(layers: list[nn.Module]) -> Iterator[None]:
    trainable = {parameter: parameter.requires_grad for layer in layers for parameter in layer.parameters()}
    try:
        yield
    finally:
        for parameter, requires_grad in trainable.items():
            parameter.requires_grad_(requires_grad)


def adapter_weights(model: nn.Module, role: str) -> list[torch.Tensor]:
    """The weights of `role`'s adapter, in module order (for fingerprints of what shaped a block)."""
    weights = []
    for layer in tuner_layers(model):
        for attribute in layer.adapter_layer_names:
            entries = getattr(layer, attribute)  # a ModuleDict (lora_A/B) or a ParameterDict (lora_embedding_A/B)
            if role in entries:
                entry = entries[role]
                weights += list(entry.parameters()) if isinstance(entry, nn.Module) else [entry]
    return weights


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` as it would be without adapters: adapter weights dropped, wrapped names restored."""
    layers = {id(layer) for layer in tuner_layers(model)}
    adapter_prefixes = set()
    for name, module in model.named_modules():
        if id(module) in layers:
            for attribute in module.adapter_layer_names + getattr(module, "other_param_names", ()):
                adapter_prefixes.add(f"{name}.{attribute}.")
    state = {}
    for key, tensor in model.state_dict().items():
        if any(key.startswith(prefix) for prefix in adapter_prefixes):
            continue
        state[key.replace(".base_layer.", ".")] = tensor
    return state


ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."


def add_role_adapter(model: nn.Module, peft_config, role: str) -> None:
    """Adds a new, trainable adapter named `role` configured by `peft_config` (e.g. a `peft.LoraConfig`).

    `inject_adapter_in_model` creates the tuner layers and records the config in `model.peft_config`, which is
    what `get_peft_model_state_dict` and `save_role_adapter` read.
    """
    if role not in ROLES:
        raise ValueError(f"Adapter name {role!r} is not a LycheeMemory role {list(ROLES)}: name it after its role.")
    if role in adapter_names(model):
        raise ValueError(f"This model already has a {role!r} adapter.")
    from peft import inject_adapter_in_model

    with warnings.catch_warnings():  # several adapters in one model is the point here
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        inject_adapter_in_model(peft_config, model, adapter_name=role)


def save_role_adapter(model: nn.Module, role: str, directory: str | os.PathLike) -> None:
    """Writes `role`'s adapter as PEFT does for a named adapter: config + safetensors weights in `directory`."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    # The backbone's embeddings are saved with the model itself: never copy them into an adapter (and never ask
    # the Hub about `base_model_name_or_path`, as peft's "auto" does to decide that).
    state = get_peft_model_state_dict(model, adapter_name=role, save_embedding_layers=False)
    state = {PEFT_KEY_PREFIX + key: tensor.detach().contiguous().cpu() for key, tensor in state.items()}
    save_file(state, os.path.join(directory, ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    model.peft_config[role].save_pretrained(directory)


def load_role_adapter(model: nn.Module, source: str | os.PathLike, role: str, **hub_kwargs) -> None:
    """Loads the PEFT adapter in `source`'s subfolder `role` (local folder or Hub repo) as adapter `role`.

    Strict: every weight the adapter's config creates must be in the file, and the file may hold no other.
    Frozen (the config's inference mode, as `PeftModel.from_pretrained`); `train_only` or `requires_grad_` make it
    trainable again.
    """
    try:
        from peft import PeftConfig, set_peft_model_state_dict
    except ImportError as error:
        raise ImportError(
            f"This checkpoint holds a {role!r} adapter, and loading adapters needs peft: pip install peft "
            "(or from_pretrained(..., load_role_adapters=False) for the bare model)."
        ) from error
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    config = PeftConfig.from_pretrained(source, subfolder=role, **hub_kwargs)
    config.inference_mode = True
    add_role_adapter(model, config, role)
    weights = load_file(cached_file(source, ADAPTER_WEIGHTS_FILE, subfolder=role, **hub_kwargs))
    weights = {key.removeprefix(PEFT_KEY_PREFIX): tensor for key, tensor in weights.items()}
    result = set_peft_model_state_dict(model, weights, adapter_name=role)
    missing = [key for key in result.missing_keys if f".{role}." in key and "lora_" in key]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"The {role!r} adapter in {source} does not match its config: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}. Re-save it with model.save_pretrained."
        )
