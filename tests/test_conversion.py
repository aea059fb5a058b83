import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from authors_checkpoint import authors_tensors, write_authors_checkpoint
from safetensors.torch import load_file

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.convert_reference import ConversionError, convert_reference_checkpoint
from lychee_hf.testing import document_ids, question_ids, run_cli, tiny_backbone

KNOBS = dict(memory_budget=16, max_answer_tokens=8)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    source = write_authors_checkpoint(tmp_path_factory.mktemp("authors") / "src", seed=0)
    destination = tmp_path_factory.mktemp("converted") / "out"
    report = convert_reference_checkpoint(source, destination, **KNOBS)
    return source, destination, report


@pytest.mark.compat
def test_every_source_tensor_is_converted_or_reported_dropped(converted):
    source, _, report = converted
    total = len(load_file(source / "model.safetensors"))
    assert report.converted + len(report.dropped) == total
    assert set(report.dropped) == {"similarity_head.weight", "similarity_head.bias"}
    assert not report.initialised


def test_memory_and_backbone_tensors_land_under_lychee_names(converted):
    source, destination, _ = converted
    src, out = load_file(source / "model.safetensors"), load_file(destination / "model.safetensors")
    assert torch.equal(out["compressor.memory_embedding.weight"], src["model.lychee_memory_embed_tokens.weight"])
    for name in ("q", "k", "v"):
        for kind in ("weight", "bias"):
            assert torch.equal(
                out[f"compressor.layers.1.{name}_proj.{kind}"],
                src[f"model.layers.1.self_attn.lychee_memory_{name}_proj.{kind}"],
            )
    assert torch.equal(out["model.layers.0.self_attn.q_proj.weight"], src["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(out["lm_head.weight"], src["lm_head.weight"])


def test_the_authors_settings_are_carried_over(converted):
    _, destination, _ = converted
    config = json.loads((destination / "config.json").read_text())
    assert config["model_type"] == "lychee_memory" and config["text_config"]["model_type"] == "qwen2"
    assert (config["compression_window"], config["compression_ratio"], config["chunk_size"]) == (32, 4, 64)
    assert config["memory_token_placement"] == "interleave" and config["position_scheme"] == "reference"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_lychee.LycheeMemoryForCausalLM"
    assert not any(key.startswith(("lychee_memory_", "beacon_")) for key in config["text_config"])
    generation = json.loads((destination / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2, 0] and generation["pad_token_id"] == 0


def test_converted_compressor_exports_the_source_memory_projection_of_the_memory_embedding(converted, tokenizer):
    # Layer 0 of every memory slot reads only the memory embedding: its key is fixed by the source tensors.
    source, destination, _ = converted
    src = load_file(source / "model.safetensors")
    model = LycheeMemoryForCausalLM.from_pretrained(destination)
    bank = model.compress(document_ids(tokenizer, 64))
    embedding = src["model.lychee_memory_embed_tokens.weight"]
    normed = embedding * torch.rsqrt(embedding.pow(2).mean(-1, keepdim=True) + 1e-6)
    normed = normed * src["model.layers.0.input_layernorm.weight"]
    key = normed @ src["model.layers.0.self_attn.lychee_memory_k_proj.weight"].T
    key = key + src["model.layers.0.self_attn.lychee_memory_k_proj.bias"]
    keys = bank.block(0).keys[0]  # (kv heads, slots, head dim)
    torch.testing.assert_close(keys, key.view(2, 1, 16).expand_as(keys), rtol=1e-5, atol=1e-6)


def test_the_converted_templates_are_the_authors_prompts(converted, tokenizer):
    _, destination, _ = converted
    config = json.loads((destination / "config.json").read_text())
    update = tokenizer.decode(sum(config["update_template_ids"], []))
    assert update.startswith("<|im_start|>user\n\nThe above is a newly provided section")
    assert "<problem> \n" in update and update.endswith("Updated memory:\n<|im_end|>\n<|im_start|>assistant\n")
    final = tokenizer.decode(sum(config["final_template_ids"], []))
    assert "previous memory.You do not need" in final
    assert tokenizer.decode(config["initial_memory_ids"]) == "No previous memory"


@pytest.mark.compat
def test_fresh_process_remote_code_load_gives_the_same_greedy_output(converted, tokenizer, tmp_path):
    _, destination, _ = converted
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    expected = LycheeMemoryForCausalLM.from_pretrained(destination).generate(input_ids=question, context_ids=doc)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["lychee_hf"] = None
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(destination)!r}, trust_remote_code=True)
        out = model.generate(input_ids=torch.tensor({question.tolist()}), context_ids=torch.tensor({doc.tolist()}))
        print(out.tolist())
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected.tolist())


def test_sharded_bf16_source_converts_into_shards(tmp_path, tokenizer):
    source = write_authors_checkpoint(tmp_path / "src", seed=1, shards=3, dtype=torch.bfloat16)
    report = convert_reference_checkpoint(source, tmp_path / "out", max_shard_bytes=20_000, **KNOBS)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(report.shards) > 1 and set(index["weight_map"].values()) == set(report.shards)
    model = LycheeMemoryForCausalLM.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.bfloat16
    reference = authors_tensors(len(tokenizer), seed=1)["model.layers.1.self_attn.lychee_memory_v_proj.weight"]
    assert torch.equal(model.compressor.layers[1].v_proj.weight, reference.to(torch.bfloat16))


def test_stock_checkpoint_converts_with_memory_weights_as_from_backbone(tmp_path, tokenizer):
    backbone = tiny_backbone("qwen2", seed=2)
    backbone.save_pretrained(tmp_path / "stock")
    tokenizer.save_pretrained(tmp_path / "stock")
    report = convert_reference_checkpoint(
        tmp_path / "stock", tmp_path / "out", chunk_size=64, compression_window=32, **KNOBS
    )
    assert len(report.initialised) == 1 + 2 * 6
    converted = LycheeMemoryForCausalLM.from_pretrained(tmp_path / "out")
    built = LycheeMemoryForCausalLM.from_backbone(backbone, tokenizer, chunk_size=64, compression_window=32, **KNOBS)
    for name, tensor in built.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name


def test_unknown_source_tensor_fails_loudly(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src")
    tensors = load_file(source / "model.safetensors")
    tensors["model.layers.0.self_attn.mystery.weight"] = torch.zeros(2)
    from safetensors.torch import save_file

    save_file(tensors, source / "model.safetensors")
    with pytest.raises(ConversionError, match="unknown tensor 'model.layers.0.self_attn.mystery.weight'"):
        convert_reference_checkpoint(source, tmp_path / "out")


def test_partly_missing_memory_weights_fail_instead_of_being_reinitialised(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src")
    tensors = load_file(source / "model.safetensors")
    del tensors["model.layers.1.self_attn.lychee_memory_k_proj.bias"]
    from safetensors.torch import save_file

    save_file(tensors, source / "model.safetensors")
    with pytest.raises(ConversionError, match=r"lacks memory tensors \['compressor.layers.1.k_proj.bias'\]"):
        convert_reference_checkpoint(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_fails_naming_the_tensor(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src")
    tensors = load_file(source / "model.safetensors")
    tensors["model.lychee_memory_embed_tokens.weight"] = torch.zeros(2, 64)
    from safetensors.torch import save_file

    save_file(tensors, source / "model.safetensors")
    with pytest.raises(ConversionError, match=r"compressor.memory_embedding.weight: source shape \(2, 64\)"):
        convert_reference_checkpoint(source, tmp_path / "out")


@pytest.mark.parametrize(
    "key, value",
    [
        ("lychee_memory_attn", "segmentation"),
        ("lychee_memory_param", ["q", "k", "v", "o"]),
        ("lychee_memory_ratio", [2, 4]),
        ("lychee_memory_stride", 16),
    ],
)
def test_unsupported_authors_settings_are_refused(tmp_path, key, value):
    source = write_authors_checkpoint(tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    config[key] = value
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=key):
        convert_reference_checkpoint(source, tmp_path / "out")


def test_a_non_empty_destination_is_refused(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ConversionError, match="not empty"):
        convert_reference_checkpoint(source, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_model_card_has_valid_front_matter_and_settings(converted):
    _, destination, _ = converted
    card = (destination / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert front["tags"] == ["lychee-memory", "long-context", "custom_code"]
    assert front["license"] == "apache-2.0" and front["base_model"]
    assert "| compression_ratio | 4 |" in card and "trust_remote_code=True" in card and "@inproceedings" in card


def test_cli_convert_and_the_conversion_script_write_the_same_checkpoint(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src")
    code, stdout, err = run_cli("convert", source, tmp_path / "cli", "--memory-budget", "16")
    assert code == 0, err[-2000:]
    assert "dropped similarity_head.weight" in stdout
    script = os.path.join(os.path.dirname(__file__), "..", "conversion", "convert_reference_checkpoint.py")
    result = subprocess.run(
        [sys.executable, script, str(source), str(tmp_path / "script"), "--memory-budget", "16"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped similarity_head.weight" in result.stdout
    first = load_file(tmp_path / "cli" / "model.safetensors")
    second = load_file(tmp_path / "script" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_cli_convert_error_is_one_line(tmp_path):
    code, _, err = run_cli("convert", tmp_path / "nope", tmp_path / "o")
    assert code == 2 and "neither a folder nor a Hub id" in err and "Traceback" not in err


def test_low_rank_memory_projections_reconstruct_an_exact_low_rank_delta(tmp_path, tokenizer):
    source = write_authors_checkpoint(tmp_path / "src", seed=3, memory_delta_rank=4)
    full = convert_reference_checkpoint(source, tmp_path / "full", **KNOBS)
    report = convert_reference_checkpoint(source, tmp_path / "lora", memory_rank=4, **KNOBS)
    assert len(report.low_rank_errors) == 6 and max(report.low_rank_errors.values()) < 1e-5
    weights = load_file(tmp_path / "lora" / "model.safetensors")
    assert "compressor.layers.0.q_proj.down" in weights and "compressor.layers.0.q_proj.weight" not in weights
    doc = document_ids(tokenizer, 100)
    exact = LycheeMemoryForCausalLM.from_pretrained(tmp_path / "full").compress(doc)
    low_rank = LycheeMemoryForCausalLM.from_pretrained(tmp_path / "lora").compress(doc)
    for i in range(len(exact)):
        torch.testing.assert_close(low_rank.block(i).keys, exact.block(i).keys, rtol=1e-4, atol=1e-5)
    assert full.low_rank_errors == {}


def test_low_rank_above_tolerance_is_refused_unless_forced(tmp_path):
    source = write_authors_checkpoint(tmp_path / "src", seed=3, memory_delta_rank=4)
    with pytest.raises(ConversionError, match="rank 2 reconstructs 6 memory projections above tolerance"):
        convert_reference_checkpoint(source, tmp_path / "out", memory_rank=2, **KNOBS)
    report = convert_reference_checkpoint(source, tmp_path / "forced", memory_rank=2, force=True, **KNOBS)
    assert min(report.low_rank_errors.values()) > 1e-3
    assert "low-rank compressor.layers.0.q_proj.weight: relative error" in report.summary()
