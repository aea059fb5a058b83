"""The trained default's weights: exported small (fp16, low-rank, PEFT layout) and applied back exactly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.default_model import SHIPPED_WEIGHTS, apply_shipped_weights, export_shipped_weights
from lychee_hf.testing import document_ids, question_ids, tiny_lychee
from lychee_hf.training.rl_config import LycheeGRPOConfig
from lychee_hf.training.rl_trainer import prepare_for_rl

pytest.importorskip("peft")


def trained_tiny(tmp_path, seed: int = 0) -> LycheeMemoryForCausalLM:
    """A tiny model with low-rank memory projections and a reasoner adapter, weights moved off their init and
    rounded to fp16 (what shipping keeps), so that a reload can be compared bit for bit."""
    torch.manual_seed(seed)
    model = tiny_lychee(memory_projection_rank=4, compression_mode="memory_tokens")
    prepare_for_rl(model, LycheeGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or name.startswith("compressor."):
                parameter.add_(0.05 * torch.randn_like(parameter))
            if parameter.requires_grad:
                parameter.copy_(parameter.half().float())
    return model.eval()


def test_export_writes_small_fp16_files_in_peft_layout(tmp_path):
    written = export_shipped_weights(trained_tiny(tmp_path), tmp_path / "weights", {"steps": 3})
    names = sorted(path.relative_to(tmp_path / "weights").as_posix() for path in written)
    assert names == [
        "compressor.safetensors",
        "reasoner/adapter_config.json",
        "reasoner/adapter_model.safetensors",
        "training.json",
    ]
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "weights" / "compressor.safetensors").values()} == {torch.float16}
    assert json.loads((tmp_path / "weights" / "training.json").read_text()) == {"steps": 3}


def test_applied_weights_reproduce_the_trained_model(tokenizer, tmp_path):
    trained = trained_tiny(tmp_path)
    export_shipped_weights(trained, tmp_path / "weights", {})
    fresh = tiny_lychee(memory_projection_rank=4, compression_mode="memory_tokens", seed=0)
    assert apply_shipped_weights(fresh, tmp_path / "weights") == ["compressor", "reasoner"]
    fresh.activate_role_adapter("reasoner")
    context, question = document_ids(tokenizer, 100), question_ids(tokenizer)
    expected = trained.generate(input_ids=question, context_ids=context, do_sample=False)
    assert torch.equal(fresh.generate(input_ids=question, context_ids=context, do_sample=False), expected)


def test_full_memory_projections_are_not_exported(tmp_path):
    with pytest.raises(ValueError, match="memory_projection_rank"):
        export_shipped_weights(tiny_lychee(), tmp_path, {})


def test_the_package_ships_its_trained_default_weights():
    assert (SHIPPED_WEIGHTS / "reasoner" / "adapter_model.safetensors").is_file()
    assert (SHIPPED_WEIGHTS / "compressor.safetensors").is_file()
    provenance = json.loads((SHIPPED_WEIGHTS / "training.json").read_text())
    assert {"compressor_pretraining", "reasoner_sft", "rl", "invocations"} <= set(provenance)
    size = sum(path.stat().st_size for path in SHIPPED_WEIGHTS.rglob("*") if path.is_file())
    assert size < 10 * 2**20  # a few MB inside the wheel


def test_shipped_files_name_no_folder_of_the_machine_that_made_them():
    import re
    from pathlib import Path

    import lychee_hf

    package = Path(lychee_hf.__file__).parent
    files = [p for p in (package / "default_weights").rglob("*") if p.suffix in (".json", ".md", ".txt")]
    files += (
        list((package.parent.parent / "model_cards").glob("*.md"))
        if (package.parent.parent / "model_cards").is_dir()
        else []
    )
    assert files
    machine_path = re.compile(r"(?<![\w.])(/(root|home|tmp|Users|var|opt|mnt|work)/|[A-Za-z]:\\\\)")
    for path in files:
        found = machine_path.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path} names a machine path: {found.group(0)}"


def default_shaped_compressor(shipped: dict):
    """A compressor with the default's shapes (SmolLM2-135M, rank-r memory projections), read off the shipped file."""
    from transformers import LlamaConfig

    from lychee_hf.modeling import LycheeCompressor, LycheeMemoryConfig

    rank, hidden = shipped["compressor.layers.0.q_proj.down"].shape
    head_dim = 64  # SmolLM2-135M
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=len({key.split(".")[2] for key in shipped if key.startswith("compressor.layers.")}),
        num_attention_heads=shipped["compressor.layers.0.q_proj.up"].shape[0] // head_dim,
        num_key_value_heads=shipped["compressor.layers.0.k_proj.up"].shape[0] // head_dim,
        head_dim=head_dim,
        vocab_size=64,
        max_position_embeddings=8192,
    )
    return LycheeCompressor(LycheeMemoryConfig(text_config=text, memory_projection_rank=int(rank)))


@pytest.mark.parametrize("names", ["current", "legacy"])
def test_the_shipped_compressor_weights_load_strictly_under_current_and_legacy_names(tmp_path, names):
    """`apply_shipped_weights` loads the shipped file strictly into a compressor of the default's shapes, and so a
    copy written with the factor names of before the rename (`lora_A` / `lora_B`, now `down` / `up`)."""
    from types import SimpleNamespace

    from safetensors.torch import load_file, save_file

    shipped = load_file(SHIPPED_WEIGHTS / "compressor.safetensors")
    compressor = default_shaped_compressor(shipped)
    legacy = {"down": "lora_A", "up": "lora_B"}
    written = {
        key.rsplit(".", 1)[0] + "." + legacy.get(key.rsplit(".", 1)[1], key.rsplit(".", 1)[1]): t
        for key, t in shipped.items()
    }
    save_file(shipped if names == "current" else written, tmp_path / "compressor.safetensors")
    assert apply_shipped_weights(SimpleNamespace(compressor=compressor), tmp_path) == ["compressor"]
    assert torch.equal(compressor.memory_embedding.weight, shipped.pop("compressor.memory_embedding.weight").float())
    for key, tensor in shipped.items():
        layer, projection, name = key.split(".")[2:]
        assert torch.equal(getattr(getattr(compressor.layers[int(layer)], projection), name), tensor.float())


def test_the_training_pipeline_refuses_held_out_rl_tasks_before_writing_anything(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "train_default_model.py"
    out, work = tmp_path / "out", tmp_path / "work"
    tasks = "facts,twohop-heldout"
    command = [sys.executable, str(script), "--out", str(out), "--work", str(work), "--rl-tasks", tasks]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "['twohop-heldout'] are held out" in result.stderr
    assert not out.exists() and not work.exists()


GENRES_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_default_on_genres.py"


def run_genres_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GENRES_SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_genre_training_refuses_a_folder_with_an_earlier_run_unless_resumed(tmp_path):
    (tmp_path / "settings.json").write_text("{}")
    result = run_genres_script("--out", tmp_path, "--steps", 3)
    assert result.returncode != 0 and "add --resume to continue it" in result.stderr
    assert (tmp_path / "settings.json").read_text() == "{}"


def test_genre_training_resumes_only_with_the_settings_it_started_with(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"steps": 100}))
    result = run_genres_script("--out", tmp_path, "--steps", 3, "--resume")
    assert result.returncode != 0 and "was started with other settings" in result.stderr


def test_genre_training_exports_only_a_finished_run(tmp_path):
    result = run_genres_script("--out", tmp_path / "run", "--export", tmp_path / "weights")
    assert result.returncode != 0 and "holds no finished run" in result.stderr
    assert not (tmp_path / "weights").exists()
