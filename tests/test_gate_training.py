"""Gate training: a tiny classifier gate learns to tell related blocks from unrelated ones on held-out data."""

import json
import random

import pytest
import torch

pytest.importorskip("peft")

from lychee_hf import LycheeMemoryForCausalLM  # noqa: E402
from lychee_hf.data import QAExample  # noqa: E402
from lychee_hf.metrics import auroc, classification_metrics  # noqa: E402
from lychee_hf.modeling.adapters_lychee import adapter_names  # noqa: E402
from lychee_hf.testing import question_ids, tiny_lychee, tiny_tokenizer  # noqa: E402
from lychee_hf.training import GateTrainingConfig, build_gate_rows, train_gate  # noqa: E402

WORDS = "the quick brown fox jumps over lazy dog Alice was born in Paris capital of France".split()


def secret_code_examples(n: int, seed: int, sentences: int = 12) -> list[QAExample]:
    """Filler sentences from the tiny corpus's words, with one "The secret code is N N N." fact somewhere."""
    examples = []
    for index in range(n):
        rng = random.Random(seed * 100_000 + index)
        code = "".join(rng.choice("0123456789") for _ in range(4))
        fact = f"The secret code is {code} {code} {code}."
        filler = [" ".join(rng.choice(WORDS) for _ in range(8)) + "." for _ in range(sentences)]
        at = rng.randrange(sentences + 1)
        before = " ".join(filler[:at]) + (" " if at else "")
        context = before + fact + " " + " ".join(filler[at:])
        span = (len(before), len(before) + len(fact))
        examples.append(
            QAExample(f"code-{seed}-{index}", "code", context, "What is the secret code?", [code], [span], 0)
        )
    return examples


def test_auroc_counts_ties_as_half():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    metrics = classification_metrics([0.9, 0.2, 0.6, 0.1], [1, 0, 0, 1])
    assert (metrics["precision"], metrics["recall"], metrics["accuracy"]) == (0.5, 0.5, 0.5)


def test_gold_teacher_memory_holds_the_facts_of_earlier_blocks_only(tokenizer):
    model = tiny_lychee(compression_mode="lossless", gate_type="classifier")
    example = secret_code_examples(1, seed=3)[0]
    rows = build_gate_rows(model, tokenizer, [example], teacher="gold")
    related = [row.block_index for row in rows if row.label]
    fact = example.context[slice(*example.supporting[0])]
    fact_ids = tokenizer.encode(fact, add_special_tokens=False)
    for row in rows:
        prompt = row.prompt_ids.tolist()
        holds_fact = any(prompt[i : i + len(fact_ids)] == fact_ids for i in range(len(prompt)))
        assert holds_fact == (row.block_index > max(related))


def test_examples_without_supporting_passages_are_refused(tokenizer):
    model = tiny_lychee(gate_type="classifier")
    example = secret_code_examples(1, seed=0)[0]
    example.supporting = []
    with pytest.raises(ValueError, match="name no supporting passage"):
        build_gate_rows(model, tokenizer, [example])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = tiny_lychee(compression_mode="lossless")
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = GateTrainingConfig(
        output_dir=str(tmp_path_factory.mktemp("trainer")),
        num_train_epochs=20,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=64,
        seed=0,
        disable_tqdm=True,
    )
    train, held_out = secret_code_examples(32, seed=0), secret_code_examples(16, seed=1)
    result = train_gate(model, tokenizer, train, config, eval_examples=held_out)
    return model, tokenizer, result, frozen


def test_trained_gate_separates_related_blocks_on_held_out_documents(trained):
    _, _, result, _ = trained
    after, before = result.metrics, result.metrics_before
    # Chance is AUROC 0.5; calling every block related would score F1 = 2p / (1 + p) at related share p.
    all_related_f1 = 2 * after["positive_rate"] / (1 + after["positive_rate"])
    assert after["auroc"] >= 0.85 and after["auroc"] > before["auroc"] + 0.2
    assert after["f1"] >= all_related_f1 + 0.2
    assert result.positive_weight > 1.0  # related blocks are the minority and weigh more


def test_gate_training_changes_only_the_gate_adapter(trained):
    model, _, _, frozen = trained
    assert adapter_names(model) == ["gate"]
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(parameter, frozen[name.replace(".base_layer", "")]), name
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B.gate" in n)


def test_trained_gate_saves_in_peft_layout_and_reloads_for_generate(trained, tmp_path):
    model, tokenizer, _, _ = trained
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "gate" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    loaded = LycheeMemoryForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.gate_type == "classifier"
    context = torch.tensor([tokenizer.encode(secret_code_examples(1, seed=2)[0].context)])
    out = loaded.generate(input_ids=question_ids(tokenizer), context_ids=context, return_dict_in_generate=True)
    expected = model.generate(input_ids=question_ids(tokenizer), context_ids=context, return_dict_in_generate=True)
    assert [r.gate_score for r in out.trace[0]] == pytest.approx([r.gate_score for r in expected.trace[0]], abs=1e-5)
    assert any(r.kept for r in out.trace[0]) and not all(r.kept for r in out.trace[0])


def test_gate_rows_can_keep_their_banks_on_disk(tokenizer, tmp_path):
    model = tiny_lychee(compression_mode="lossless", gate_type="classifier")
    examples = secret_code_examples(2, seed=5)
    in_memory = build_gate_rows(model, tokenizer, examples)
    on_disk = build_gate_rows(model, tokenizer, examples, bank_dir=str(tmp_path / "banks"))
    assert len(list((tmp_path / "banks").iterdir())) == 2
    assert [r.label for r in on_disk] == [r.label for r in in_memory]
    assert torch.equal(on_disk[1].block.keys, in_memory[1].block.keys)


def test_evaluate_gate_survives_extreme_logits():
    from types import SimpleNamespace

    from lychee_hf.training.gate import evaluate_gate

    class FixedTrainer:
        def predict(self, dataset):
            return SimpleNamespace(predictions=torch.tensor([-1000.0, 1000.0]).numpy())

    rows = [SimpleNamespace(label=0), SimpleNamespace(label=1)]
    metrics = evaluate_gate(FixedTrainer(), rows, threshold=0.5)
    assert metrics["precision"] == metrics["recall"] == metrics["auroc"] == 1.0
