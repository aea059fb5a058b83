import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


def _saved(tmp_path, tokenizer):
    model = tiny_lychee("qwen2")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return model


def test_save_writes_auto_map_and_the_modeling_files(tmp_path, tokenizer):
    _saved(tmp_path, tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "lychee_memory"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_lychee.LycheeMemoryForCausalLM"
    for name in (
        "modeling_lychee.py",
        "configuration_lychee.py",
        "compressor_lychee.py",
        "attention_lychee.py",
        "compat_lychee.py",
        "gate_lychee.py",
        "reasoner_lychee.py",
        "prompts_lychee.py",
        "pretrained_lychee.py",
        "validation_lychee.py",
        "memory_bank_lychee.py",
        "templates_lychee.py",
    ):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.compat
def test_load_reports_no_missing_or_unexpected_weights(tmp_path, tokenizer):
    _saved(tmp_path, tokenizer)
    _, info = LycheeMemoryForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_import_registers_auto_classes_without_remote_code(tmp_path, tokenizer):
    model = _saved(tmp_path, tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is LycheeMemoryForCausalLM
    doc, question = document_ids(tokenizer, 100), question_ids(tokenizer)
    assert torch.equal(
        loaded.generate(input_ids=question, context_ids=doc), model.generate(input_ids=question, context_ids=doc)
    )


@pytest.mark.compat
def test_fresh_process_without_lychee_hf_loads_remote_code_with_same_output(tmp_path, tokenizer):
    model = _saved(tmp_path, tokenizer)
    doc, question = document_ids(tokenizer, 100), question_ids(tokenizer)
    expected = model.generate(input_ids=question, context_ids=doc).tolist()
    script = textwrap.dedent(f"""
        import sys
        sys.modules["lychee_hf"] = None  # the package must not be importable
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        out = model.generate(input_ids=torch.tensor({question.tolist()}), context_ids=torch.tensor({doc.tolist()}))
        print(out.tolist())
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected)


def test_low_rank_checkpoints_with_the_former_lora_names_load_with_identical_outputs(tmp_path, tokenizer):
    """`LowRankDelta`'s factors were `lora_A` / `lora_B` (PEFT's names) before `down` / `up`: such checkpoints load
    through the key map with nothing missing, answer the same, and are saved again under the current names."""
    from safetensors.torch import load_file, save_file

    model = tiny_lychee(memory_projection_rank=4, compression_mode="memory_tokens")  # factors perturbed off zero
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    weights_file = tmp_path / "model" / "model.safetensors"
    weights = load_file(weights_file)
    assert "compressor.layers.1.v_proj.down" in weights and not any("lora_" in key for key in weights)
    former = {"down": "lora_A", "up": "lora_B"}
    renamed = {
        (key.rsplit(".", 1)[0] + "." + former[key.rsplit(".", 1)[1]] if key.rsplit(".", 1)[1] in former else key): t
        for key, t in weights.items()
    }
    layers = model.config.text_config.num_hidden_layers
    assert sum(key.endswith((".lora_A", ".lora_B")) for key in renamed) == 2 * 3 * layers
    save_file(renamed, weights_file, metadata={"format": "pt"})

    loaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    assert torch.equal(loaded.compress(doc).block(2).keys, model.compress(doc).block(2).keys)
    assert torch.equal(
        loaded.generate(input_ids=question, context_ids=doc, do_sample=False),
        model.generate(input_ids=question, context_ids=doc, do_sample=False),
    )
    loaded.save_pretrained(tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert set(again) == set(weights) and all(torch.equal(again[key], weights[key]) for key in weights)
