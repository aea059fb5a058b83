"""Tiny random checkpoints in the authors' release format (their tensor names and config keys), written in code.

Mirrors `lerverson/LycheeMemory-7B` at a tiny size: `model_type "qwen2"`, `lychee_memory_*` (and duplicate
`beacon_*`) config keys, memory-token embedding `model.lychee_memory_embed_tokens.weight` [1, hidden], memory
q/k/v projections `model.layers.{i}.self_attn.lychee_memory_{q,k,v}_proj.{weight,bias}` that differ from the
backbone's, the unused `similarity_head` [1, hidden], and a generation config whose eos list holds the pad id.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lychee_hf.testing import tiny_tokenizer

TINY = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128}


def authors_config(vocab_size: int, eos_id: int, window: int = 32, dims: dict = TINY) -> dict:
    memory = {
        "window": window,
        "stride": window,
        "attn": "full-coverage",
        "ratio": [4],
        "ratio_mix": "adapt-1024",
        "param": ["q", "k", "v"],
        "embed_init": "eos",
        "sink_size": 0,
        "attend_prev": True,
        "pos": "interleave",
        "parallel_window": 1,
    }
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["intermediate"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": dims["layers"],
        "attention_dropout": 0.0,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "auto_map": {"AutoModelForCausalLM": "modeling_qwen2.Qwen2ForCausalLM"},
        **{f"lychee_memory_{key}": value for key, value in memory.items()},
        **{f"beacon_{key}": value for key, value in memory.items()},
    }


def authors_tensors(
    vocab_size: int,
    seed: int = 0,
    with_memory: bool = True,
    memory_delta_rank: int | None = None,
    dims: dict = TINY,
) -> dict[str, torch.Tensor]:
    """Random weights; with `memory_delta_rank`, memory q/k/v weights = backbone's + an exact rank-r delta."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.08 * torch.randn(*shape, generator=generator)

    HIDDEN, LAYERS, INTERMEDIATE = dims["hidden"], dims["layers"], dims["intermediate"]  # noqa: N806
    kv = dims["kv_heads"] * (HIDDEN // dims["heads"])
    tensors = {"model.embed_tokens.weight": rand(vocab_size, HIDDEN), "model.norm.weight": 1 + rand(HIDDEN)}
    tensors["lm_head.weight"] = rand(vocab_size, HIDDEN)
    for i in range(LAYERS):
        prefix = f"model.layers.{i}"
        shapes = {"q_proj": HIDDEN, "k_proj": kv, "v_proj": kv}
        for name, out in shapes.items():
            tensors[f"{prefix}.self_attn.{name}.weight"] = rand(out, HIDDEN)
            tensors[f"{prefix}.self_attn.{name}.bias"] = rand(out)
            if with_memory:
                own = rand(out, HIDDEN)
                if memory_delta_rank:
                    own = tensors[f"{prefix}.self_attn.{name}.weight"] + rand(out, memory_delta_rank) @ rand(
                        memory_delta_rank, HIDDEN
                    )
                tensors[f"{prefix}.self_attn.lychee_memory_{name}.weight"] = own
                tensors[f"{prefix}.self_attn.lychee_memory_{name}.bias"] = rand(out)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = rand(HIDDEN, HIDDEN)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        tensors[f"{prefix}.mlp.up_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        tensors[f"{prefix}.mlp.down_proj.weight"] = rand(HIDDEN, INTERMEDIATE)
        tensors[f"{prefix}.input_layernorm.weight"] = 1 + rand(HIDDEN)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = 1 + rand(HIDDEN)
    if with_memory:
        tensors["model.lychee_memory_embed_tokens.weight"] = rand(1, HIDDEN)
        tensors["similarity_head.weight"] = rand(1, HIDDEN)
        tensors["similarity_head.bias"] = rand(1)
    return tensors


def write_authors_checkpoint(
    directory: str | Path,
    seed: int = 0,
    shards: int = 1,
    dtype: torch.dtype = torch.float32,
    with_memory: bool = True,
    window: int = 32,
    memory_delta_rank: int | None = None,
    dims: dict = TINY,
) -> Path:
    """Writes config.json, (sharded) safetensors, tokenizer and generation config in the authors' layout."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(directory)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = authors_config(len(tokenizer), eos, window, dims)
    config["torch_dtype"] = str(dtype).replace("torch.", "")
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    generation = {"bos_token_id": eos, "eos_token_id": [eos, pad], "pad_token_id": pad, "do_sample": False}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    tensors = {
        k: v.to(dtype).contiguous()
        for k, v in authors_tensors(len(tokenizer), seed, with_memory, memory_delta_rank, dims).items()
    }
    if shards == 1:
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
        return directory
    names = sorted(tensors)
    weight_map = {}
    for shard in range(shards):
        part = names[shard::shards]
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, directory / file, metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return directory
