"""The weights digest in a memory bank's fingerprint: a hash of every weight that can change a block's K/V.

A block's keys and values depend on the token embedding, every decoder layer below them (attention, MLP, norms,
rotary buffers), the compressor's memory embedding and projections, and the `compressor` role adapter. The digest
covers all of those, in their stored dtype, and nothing else: the LM head, the final norm, the gate head and the
`gate` / `reasoner` adapters never touch a block, so training them keeps every bank readable. Names are taken as
they are without adapters (peft's `.base_layer.` removed), so loading a reasoner adapter does not change the
digest either.

Hashing reads every covered byte (about 1.6 GB/s for SHA-256 on one core here: ~0.3 s for the embedded 135M
default in float32, ~9 s for a 7B model in bfloat16, measured in benchmarks/RESULTS.md), so it runs once per
model and is cached on the model. The cache is keyed on each covered tensor's name, data pointer, version
counter, dtype, shape and device: loading weights (`load_state_dict`), an optimizer step, an in-place update under
`torch.no_grad()`, replacing a parameter, moving or casting the model, or adding/removing a compressor adapter all
invalidate it. Writes through `tensor.data` bypass the version counter; after those, pass `refresh=True`.
"""

import contextlib
import ctypes
import hashlib
from collections.abc import Iterator

import torch
from torch import nn

from .adapters_lychee import tuner_layers

KV_ROLE = "compressor"  # the only role adapter that changes a block's K/V
# 2: every weight that shapes a block's K/V. Banks without it carry the version-1 digest of five tensors, which
# cannot tell two models apart reliably; they are refused with a request to recompress.
WEIGHTS_DIGEST_VERSION = 2


def weights_digest(model: nn.Module, refresh: bool = False) -> str:
    """A 16-hex-digit SHA-256 digest of every weight that shapes a block's K/V (see the module docstring).

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its `model` backbone and `compressor`).
        refresh (`bool`): recompute even if the cache looks valid.
    """
    key = tuple(_cache_key(name, tensor) for name, tensor in _kv_tensors(model, materialize=False))
    cached = model.__dict__.get("_lychee_weights_digest")
    if cached is not None and cached[0] == key and not refresh:
        return cached[1]
    digest = hash_tensors(_kv_tensors(model, materialize=True))
    model.__dict__["_lychee_weights_digest"] = (key, digest)
    return digest


def hash_tensors(tensors) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each `(name, tensor)`, in the order given; 16 hex digits."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{str(tensor.dtype)}|{list(tensor.shape)}\n".encode())
        data = tensor.detach().contiguous().reshape(-1).cpu()
        if data.numel():
            digest.update(_host_bytes(data))
    return digest.hexdigest()[:16]


def _host_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, read in place (`tensor` must outlive the view).

    Not `tensor.numpy()`: that marks the storage as never resizable again, and FSDP2 frees the weights it gathered
    by resizing their storage to zero (on CPU, `.cpu()` above is the weight itself, so resharding after a digest
    failed with "Trying to resize storage that is not resizable").
    """
    size = tensor.numel() * tensor.element_size()
    return memoryview((ctypes.c_ubyte * size).from_address(tensor.data_ptr()))


def _cache_key(name: str, tensor: torch.Tensor) -> tuple:
    try:
        version = tensor._version
    except RuntimeError:  # inference tensors keep no version counter (and cannot be changed in place)
        version = -1
    return (name, tensor.data_ptr(), version, tensor.dtype, tuple(tensor.shape), str(tensor.device))


def _kv_tensors(model: nn.Module, materialize: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """`(name, tensor)` of every covered parameter and buffer, in module order, names without adapters."""
    skipped = _other_adapter_prefixes(model) | {"model.norm"}  # the final norm only feeds the LM head
    for prefix, root in (("model", model.model), ("compressor", model.compressor)):
        for name, tensor in _walk(root, prefix, materialize, skipped):
            yield name.replace(".base_layer.", "."), tensor


def _walk(module: nn.Module, prefix: str, materialize: bool, skipped: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """A module's own tensors then its children's, leaving out the `skipped` names (modules or tensors); an
    offloaded module (device map) is loaded while it is read."""
    if prefix in skipped:
        return
    offloaded = materialize and _has_offloaded_params(module)
    with _aligned(module) if offloaded else contextlib.nullcontext():
        tensors = ((f"{prefix}.{n}", t) for n, t in _named_tensors(module, recurse=offloaded))
        yield from ((name, t) for name, t in tensors if not _under(name, skipped))
    if offloaded:  # the hook loaded (and the loop read) the module's whole subtree
        return
    for child_name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{prefix}.{child_name}", materialize, skipped)


def _under(name: str, skipped: set[str]) -> bool:
    """Whether `name` or one of its dotted parents is in `skipped`."""
    parts = name.split(".")
    return any(".".join(parts[:end]) in skipped for end in range(1, len(parts) + 1))


def _named_tensors(module: nn.Module, recurse: bool) -> list[tuple[str, torch.Tensor]]:
    if recurse:
        return [*module.named_parameters(), *module.named_buffers()]
    # A module's own tensors, straight from its registries: this runs for every module on every fingerprint.
    own = [*module._parameters.items(), *module._buffers.items()]
    return [(name, tensor) for name, tensor in own if tensor is not None]


def _other_adapter_prefixes(model: nn.Module) -> set[str]:
    """Names of adapter weights of every role but the compressor's (they never reach a block)."""
    layers = {id(layer) for layer in tuner_layers(model)}
    prefixes = set()
    for name, module in model.named_modules():
        if id(module) not in layers:
            continue
        for attribute in module.adapter_layer_names:
            for role in getattr(module, attribute).keys():
                if role != KV_ROLE:
                    prefixes.add(f"{name}.{attribute}.{role}")
    return prefixes


def _has_offloaded_params(module: nn.Module) -> bool:
    if getattr(module, "_hf_hook", None) is None:  # no device map: nothing is offloaded (accelerate not needed)
        return False
    from accelerate.utils import has_offloaded_params

    return has_offloaded_params(module)


@contextlib.contextmanager
def _aligned(module: nn.Module):
    from accelerate.utils import align_module_device

    with align_module_device(module):
        yield
