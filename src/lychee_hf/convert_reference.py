"""Conversion of the authors' LycheeMemory checkpoints (and stock Qwen2/Llama ones) into lychee-hf checkpoints.

The source is a folder or Hub id in the authors' format (`model_type "qwen2"`, `lychee_memory_*` config keys,
memory weights beside the backbone's). The conversion is a declared key map with strict accounting: every
source tensor is consumed by exactly one rule or dropped with a stated reason, every target tensor is produced
once with its shape checked against the lychee-hf model, and anything else fails. Tensors are read and written
one at a time (output shards are flushed as they fill), so a 7B checkpoint is never held twice in memory.
"""

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .modeling import LycheeMemoryConfig, LycheeMemoryForCausalLM, template_config_ids

# source pattern -> target name (backreferences allowed). Order does not matter: patterns are disjoint.
KEY_MAP: dict[str, str] = {
    r"model\.embed_tokens\.weight": r"model.embed_tokens.weight",
    r"model\.norm\.weight": r"model.norm.weight",
    r"lm_head\.weight": r"lm_head.weight",
    r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)": r"model.layers.\1.self_attn.\2_proj.\3",
    r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight": r"model.layers.\1.mlp.\2_proj.weight",
    r"model\.layers\.(\d+)\.(input|post_attention)_layernorm\.weight": r"model.layers.\1.\2_layernorm.weight",
    r"model\.lychee_memory_embed_tokens\.weight": r"compressor.memory_embedding.weight",
    r"model\.layers\.(\d+)\.self_attn\.lychee_memory_([qkv])_proj\.(weight|bias)": r"compressor.layers.\1.\2_proj.\3",
}
# source pattern -> why it is dropped (reported, never silently).
DROPPED: dict[str, str] = {
    r"similarity_head\.(weight|bias)": "unused by the authors' forward and generate",
    r"model\.layers\.(\d+)\.self_attn\.rotary_emb\.inv_freq": "recomputed from the config",
}
MEMORY_PREFIX = "compressor."
CONFIG_KEYS_DROPPED = ("auto_map", "architectures", "_name_or_path", "transformers_version")
MAX_SHARD_BYTES = 2 * 2**30


class ConversionError(ValueError):
    """The source cannot be converted exactly: the message names the tensor or setting."""


@dataclass
class ConversionReport:
    """What a conversion did, tensor by tensor and setting by setting."""

    converted: int = 0
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    low_rank_errors: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"converted {self.converted} tensors into {len(self.shards)} shard(s)"]
        lines += [f"dropped {name}: {why}" for name, why in sorted(self.dropped.items())]
        if self.initialised:
            lines.append(f"initialised {len(self.initialised)} memory tensors as from_backbone does (stock checkpoint)")
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        lines += [f"low-rank {name}: relative error {error:.2e}" for name, error in self.low_rank_errors.items()]
        return "\n".join(lines)


def map_key(name: str) -> str | None:
    """Target name of a source tensor, None when it is dropped; raises for an unknown tensor."""
    for pattern, target in KEY_MAP.items():
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name)
    if any(re.fullmatch(pattern, name) for pattern in DROPPED):
        return None
    raise ConversionError(f"unknown tensor {name!r} in the source checkpoint: no rule converts it")


def lychee_settings(source_config: dict) -> dict:
    """`LycheeMemoryConfig` knobs from the authors' `lychee_memory_*` keys; refuses settings lychee-hf lacks."""
    get = source_config.get
    window, stride = get("lychee_memory_window", 1024), get("lychee_memory_stride", 1024)
    ratios = get("lychee_memory_ratio", [4])
    ratios = ratios if isinstance(ratios, list) else [ratios]
    params = get("lychee_memory_param", ["q", "k", "v"])
    refusals = {
        "lychee_memory_attn": (get("lychee_memory_attn", "full-coverage") == "full-coverage", "full-coverage"),
        "lychee_memory_stride": (stride == window, f"equal to lychee_memory_window ({window})"),
        "lychee_memory_ratio": (len(ratios) == 1 and ratios[0] > 0, "a single positive ratio"),
        "lychee_memory_param": (set(params) == {"q", "k", "v"}, '["q", "k", "v"]'),
        "lychee_memory_sink_size": (get("lychee_memory_sink_size", 0) == 0, "0"),
        "lychee_memory_parallel_window": (get("lychee_memory_parallel_window", 1) == 1, "1"),
    }
    for key, (supported, expected) in refusals.items():
        if not supported:
            raise ConversionError(f"{key}={get(key)!r} is not supported by lychee-hf (expected {expected})")
    return {
        "compression_window": window,
        "compression_ratio": ratios[0],
        "memory_token_placement": get("lychee_memory_pos", "interleave"),
        "chunk_size": 2 * window,
        "position_scheme": "reference",
        "compression_mode": "memory_tokens",
    }


def backbone_config(source_config: dict):
    """The source config without the method's keys, as a transformers config (Qwen2 / Llama / Mistral)."""
    from transformers import AutoConfig

    plain = {
        key: value
        for key, value in source_config.items()
        if not key.startswith(("lychee_memory_", "beacon_")) and key not in CONFIG_KEYS_DROPPED
    }
    model_type = plain.pop("model_type", None)
    if model_type is None:
        raise ConversionError("the source config.json has no model_type")
    return AutoConfig.for_model(model_type, **plain)


def convert_reference_checkpoint(
    source: str | Path,
    destination: str | Path,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    memory_rank: int | None = None,
    tolerance: float = 1e-3,
    force: bool = False,
    **knobs,
) -> ConversionReport:
    """Converts an authors'-format (or stock Qwen2/Llama) checkpoint into a lychee-hf checkpoint folder.

    Args:
        source (`str` or `Path`): local folder or Hub id (safetensors, single or sharded).
        destination (`str` or `Path`): new folder; refused if it exists and is not empty.
        max_shard_bytes (`int`): size at which an output shard is flushed.
        memory_rank (`int`, *optional*): store the memory q/k/v projections as the backbone's plus a delta of this
            rank (truncated SVD of memory - backbone); `None` keeps the exact full matrices.
        tolerance (`float`): largest relative reconstruction error ||W - (W_base + up down)|| / ||W|| accepted per
            projection with `memory_rank`.
        force (`bool`): convert even when a projection exceeds `tolerance` (the errors stay in the report).
        **knobs: `LycheeMemoryConfig` overrides (e.g. `chunk_size=8192`, `memory_budget=512`).

    Returns:
        `ConversionReport`.
    """
    from transformers import AutoTokenizer, GenerationConfig

    source_dir = _resolve_source(source)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ConversionError(f"{destination} is not empty: choose a new folder (nothing is overwritten)")
    source_config = json.loads((source_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    config = _target_config(source_config, tokenizer, knobs)
    plan = _conversion_plan(source_dir, _expected_tensors(config))  # names and shapes of the full matrices
    config.memory_projection_rank = memory_rank
    expected = _expected_tensors(config)
    low_rank = _low_rank_plan(plan, memory_rank, tolerance, force) if memory_rank else {}

    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        report = ConversionReport(settings={k: getattr(config, k) for k in lychee_settings(source_config) | knobs})
        report.dropped = plan.dropped
        writer = _ShardWriter(destination, max_shard_bytes)
        for target, (file, name) in plan.sources.items():
            if target in low_rank:
                continue
            with safe_open(file, framework="pt") as handle:
                tensor = handle.get_tensor(name)
            _check_shape(target, tensor, expected)
            writer.add(target, tensor)
            report.converted += 1
        for target, producer in plan.initialised.items():
            if target in low_rank:
                continue
            tensor = producer()
            _check_shape(target, tensor, expected)
            writer.add(target, tensor)
            report.initialised.append(target)
        for target, factors in low_rank.items():
            stem = target.removesuffix(".weight")
            for suffix, tensor in zip(("down", "up"), factors.tensors):
                _check_shape(f"{stem}.{suffix}", tensor, expected)
                writer.add(f"{stem}.{suffix}", tensor)
            report.converted += 1
            report.low_rank_errors[target] = factors.error
        report.shards = writer.close()

        generation = (
            GenerationConfig.from_pretrained(source_dir) if (source_dir / "generation_config.json").exists() else None
        )
        _write_checkpoint_files(destination, config, tokenizer, generation, base_model=str(source))
    except BaseException:
        _remove_partial_output(destination, created)
        raise
    return report


# --------------------------------------------------------------------------------------------- internals
def _remove_partial_output(destination: Path, created: bool) -> None:
    """A failed conversion leaves nothing behind, so the same command can simply run again."""
    if created:
        shutil.rmtree(destination, ignore_errors=True)
        return
    for child in destination.iterdir():  # the folder was there (empty) before: keep it, empty
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@dataclass
class _Plan:
    sources: dict[str, tuple[Path, str]]
    initialised: dict[str, object]
    dropped: dict[str, str]


def _resolve_source(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    if str(source).count("/") == 1 and not path.exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))
    raise ConversionError(f"source {source} is neither a folder nor a Hub id")


def _target_config(source_config: dict, tokenizer, knobs: dict) -> LycheeMemoryConfig:
    text_config = backbone_config(source_config)
    has_memory_keys = any(key.startswith("lychee_memory_") for key in source_config)
    settings = lychee_settings(source_config) if has_memory_keys else {}
    settings.update(knobs)
    try:
        config = LycheeMemoryConfig(text_config=text_config, **template_config_ids(tokenizer), **settings)
    except ValueError as error:
        raise ConversionError(str(error)) from error
    config.dtype = source_config.get("torch_dtype") or source_config.get("dtype") or "float32"
    return config


def _expected_tensors(config: LycheeMemoryConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Target name -> (shape, tied?) of every tensor a lychee-hf model with `config` holds."""
    with torch.device("meta"):
        model = LycheeMemoryForCausalLM(config)
    tied = config.tie_word_embeddings
    return {name: (tuple(t.shape), tied and name == "lm_head.weight") for name, t in model.state_dict().items()}


def _source_tensors(source_dir: Path) -> dict[str, Path]:
    index = source_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: source_dir / file for name, file in weight_map.items()}
    single = source_dir / "model.safetensors"
    if not single.is_file():
        raise ConversionError(f"{source_dir} holds no model.safetensors or model.safetensors.index.json")
    with safe_open(single, framework="pt") as handle:
        return {name: single for name in handle.keys()}


def _conversion_plan(source_dir: Path, expected: dict) -> _Plan:
    sources, dropped = {}, {}
    for name, file in sorted(_source_tensors(source_dir).items()):
        target = map_key(name)
        if target is None:
            dropped[name] = next(why for pattern, why in DROPPED.items() if re.fullmatch(pattern, name))
            continue
        if target not in expected:
            raise ConversionError(f"source tensor {name!r} maps to {target!r}, which the lychee-hf model lacks")
        sources[target] = (file, name)
    memory = [t for t in expected if t.startswith(MEMORY_PREFIX)]
    found_memory = [t for t in memory if t in sources]
    initialised = {}
    if not found_memory:  # a stock backbone: memory weights start as from_backbone makes them
        initialised = _memory_initialisers(source_dir, sources, memory)
    elif len(found_memory) != len(memory):
        missing = sorted(set(memory) - set(found_memory))
        raise ConversionError(f"the source lacks memory tensors {missing[:4]}{'...' if len(missing) > 4 else ''}")
    missing = [t for t, (_, tied) in expected.items() if t not in sources and t not in initialised and not tied]
    if missing:
        raise ConversionError(f"the source lacks tensors {missing[:4]}{'...' if len(missing) > 4 else ''}")
    return _Plan(sources, initialised, dropped)


def _memory_initialisers(source_dir: Path, sources: dict, memory: list[str]) -> dict:
    """Memory embedding = the eos embedding row, memory q/k/v = copies of the backbone's (read lazily)."""
    config = json.loads((source_dir / "config.json").read_text())
    eos = config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise ConversionError("the source config has no eos_token_id to initialise the memory embedding from")

    def read(target: str, rows=None):
        def load():
            file, name = sources[target]
            with safe_open(file, framework="pt") as handle:
                tensor = handle.get_tensor(name)
            return tensor[rows].clone() if rows is not None else tensor

        return load

    initialisers = {}
    for target in memory:
        if target == "compressor.memory_embedding.weight":
            initialisers[target] = read("model.embed_tokens.weight", rows=slice(eos, eos + 1))
        else:  # compressor.layers.{i}.{q,k,v}_proj.{weight,bias}
            layer, projection, kind = re.fullmatch(r"compressor\.layers\.(\d+)\.(\w_proj)\.(\w+)", target).groups()
            initialisers[target] = read(f"model.layers.{layer}.self_attn.{projection}.{kind}")
    return initialisers


@dataclass
class _Factors:
    tensors: tuple[torch.Tensor, torch.Tensor]  # LowRankDelta.down (r, in), LowRankDelta.up (out, r)
    error: float


def _low_rank_plan(plan: _Plan, rank: int, tolerance: float, force: bool) -> dict[str, _Factors]:
    """Factors of every memory q/k/v weight as backbone + up @ down; refuses projections above `tolerance`."""
    factors = {}
    for target in [
        t for t in {**plan.sources, **plan.initialised} if re.fullmatch(r"compressor\.layers\.\d+\.\w_proj\.weight", t)
    ]:
        layer, projection = re.fullmatch(r"compressor\.layers\.(\d+)\.(\w_proj)\.weight", target).groups()
        memory = _read_planned(plan, target)
        base = _read_planned(plan, f"model.layers.{layer}.self_attn.{projection}.weight")
        factors[target] = _factorise(memory.float(), base.float(), rank, memory.dtype)
    too_far = {t: f.error for t, f in factors.items() if f.error > tolerance}
    if too_far and not force:
        worst = sorted(too_far.items(), key=lambda item: -item[1])[:4]
        listing = ", ".join(f"{name} {error:.2e}" for name, error in worst)
        raise ConversionError(
            f"rank {rank} reconstructs {len(too_far)} memory projections above tolerance {tolerance:g} ({listing}): "
            "raise the rank, raise the tolerance, or pass force=True (--force)"
        )
    return factors


def _read_planned(plan: _Plan, target: str) -> torch.Tensor:
    if target in plan.initialised:
        return plan.initialised[target]()
    file, name = plan.sources[target]
    with safe_open(file, framework="pt") as handle:
        return handle.get_tensor(name)


def _factorise(memory: torch.Tensor, base: torch.Tensor, rank: int, dtype: torch.dtype) -> _Factors:
    """Truncated SVD of memory - base: up = U_r S_r (out, r), down = V_r^T (r, in); error relative to ||memory||."""
    delta = memory - base
    if not delta.any():  # a stock backbone: zero delta, `down` random so that training can move `up`
        generator = torch.Generator().manual_seed(0)
        down = 0.02 * torch.randn(rank, delta.shape[1], generator=generator)
        return _Factors((down.to(dtype), torch.zeros(delta.shape[0], rank, dtype=dtype)), 0.0)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    up, down = u[:, :rank] * s[:rank], vh[:rank]
    error = (torch.linalg.matrix_norm(delta - up @ down) / torch.linalg.matrix_norm(memory)).item()
    return _Factors((down.to(dtype), up.to(dtype)), error)


def _check_shape(target: str, tensor: torch.Tensor, expected: dict) -> None:
    shape = expected[target][0]
    if tuple(tensor.shape) != shape:
        raise ConversionError(f"{target}: source shape {tuple(tensor.shape)} but the lychee-hf model needs {shape}")


class _ShardWriter:
    """Collects tensors into safetensors shards of at most `max_bytes`, flushing each shard as it fills."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory, self.max_bytes = directory, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[tuple[str, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size

    def _flush(self) -> None:
        name = f"shard-{len(self.files):05d}.safetensors"
        save_file(self.pending, self.directory / name, metadata={"format": "pt"})
        self.files.append((name, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        if self.pending:
            self._flush()
        if len(self.files) == 1:
            (self.directory / self.files[0][0]).rename(self.directory / "model.safetensors")
            return ["model.safetensors"]
        total = len(self.files)
        weight_map, names = {}, []
        for index, (temporary, tensors) in enumerate(self.files):
            final = f"model-{index + 1:05d}-of-{total:05d}.safetensors"
            (self.directory / temporary).rename(self.directory / final)
            weight_map.update({tensor: final for tensor in tensors})
            names.append(final)
        total_size = sum((self.directory / n).stat().st_size for n in names)
        index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names


def _write_checkpoint_files(
    destination: Path, config: LycheeMemoryConfig, tokenizer, generation, base_model: str
) -> None:
    """config.json with auto_map, the modeling files, tokenizer, generation config and the model card."""
    from . import modeling
    from .model_card import render_model_card

    config.architectures = ["LycheeMemoryForCausalLM"]
    config.auto_map = {
        "AutoConfig": "configuration_lychee.LycheeMemoryConfig",
        "AutoModelForCausalLM": "modeling_lychee.LycheeMemoryForCausalLM",
    }
    config.to_json_file(destination / "config.json")
    for file in Path(modeling.__file__).parent.glob("*_lychee.py"):
        shutil.copy(file, destination / file.name)
    tokenizer.save_pretrained(destination)
    if generation is not None:
        generation.save_pretrained(destination)
    (destination / "README.md").write_text(render_model_card(config, base_model=base_model))
