"""The span-choice objective: rows from gold sentences, a loss over the candidates' scores, and a trainer that
moves only the reasoner adapter towards the gold span."""

import pytest
import torch

from lychee_hf.data import QAExample
from lychee_hf.modeling.extract_lychee import candidate_scores
from lychee_hf.testing import tiny_lychee
from lychee_hf.training.span_choice import build_span_choice_rows, span_choice_loss, train_span_choice
from lychee_hf.training.trainer_utils import LycheeTrainingArguments

SENTENCE = "Invoices for hosting fall due within 37 days; disputed amounts within 87 days."
QUESTION = "When do invoices for hosting fall due?"


def example(sentence: str = SENTENCE, answers: tuple[str, ...] = ("37 days",), question: str = QUESTION):
    context = "The office opens early. " * 3 + sentence + " The team meets on Fridays." * 3
    start = context.index(sentence)
    supporting = [(start, start + len(sentence))] if answers else []
    return QAExample("x", "genres", context, question, list(answers), supporting, 0)


def test_a_row_holds_the_gold_answer_first_and_the_sentence_s_other_values(tokenizer):
    row = build_span_choice_rows(tokenizer, [example()])[0]
    spans = [tokenizer.decode(ids) for ids in row.candidate_ids]
    assert row.gold == 0 and spans[0] == "37 days"
    assert "87 days" in spans
    assert tokenizer.decode(row.passage_ids) == SENTENCE


def test_examples_without_a_choice_give_no_row(tokenizer):
    unanswerable = example(answers=())
    single = example(sentence="Invoices for hosting are paid to Avocet.", answers=("Avocet",))
    answer_elsewhere = example(answers=("12 weeks",))
    assert build_span_choice_rows(tokenizer, [unanswerable, single, answer_elsewhere]) == []


def test_rows_keep_at_most_max_candidates_with_the_gold_one(tokenizer):
    sentence = "Fees: 1 day, 2 days, 3 days, 4 days, 5 days and 37 days for hosting."
    row = build_span_choice_rows(tokenizer, [example(sentence=sentence)], max_candidates=3)[0]
    assert len(row.candidate_ids) == 3 and tokenizer.decode(row.candidate_ids[0]) == "37 days"


def test_the_loss_is_the_cross_entropy_of_the_gold_span_over_the_inference_scores(tokenizer):
    model = tiny_lychee(max_answer_tokens=6)
    row = build_span_choice_rows(tokenizer, [example()])[0]
    stop = tokenizer.eos_token_id
    scores = torch.tensor(candidate_scores(model, row.question_ids, row.passage_ids, row.candidate_ids, stop))
    expected = -scores.log_softmax(-1)[row.gold]
    with torch.no_grad():
        assert span_choice_loss(model, row, stop).item() == pytest.approx(expected.item(), abs=1e-4)


def test_training_raises_the_gold_span_above_the_others_and_moves_only_the_reasoner_adapter(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_lychee(max_answer_tokens=6)
    examples = [example()]
    row = build_span_choice_rows(tokenizer, examples)[0]
    stop = tokenizer.eos_token_id
    with torch.no_grad():
        before = span_choice_loss(model, row, stop).item()
    frozen = {name: weight.detach().clone() for name, weight in model.named_parameters() if "lora_" not in name}
    args = LycheeTrainingArguments(output_dir=str(tmp_path), max_steps=12, learning_rate=1e-2, seed=0)
    train_span_choice(model, tokenizer, examples, args)
    with torch.no_grad():
        after = span_choice_loss(model, row, stop).item()
    assert after < before - 0.4
    assert all(torch.equal(weight, frozen[name]) for name, weight in model.named_parameters() if name in frozen)
    scores = candidate_scores(model, row.question_ids, row.passage_ids, row.candidate_ids, stop)
    assert max(range(len(scores)), key=scores.__getitem__) == row.gold


def test_training_refuses_examples_that_give_no_choice(tokenizer, tmp_path):
    model = tiny_lychee()
    args = LycheeTrainingArguments(output_dir=str(tmp_path), max_steps=1)
    with pytest.raises(ValueError, match="None of the examples gives a span choice"):
        train_span_choice(model, tokenizer, [example(answers=())], args)


def test_training_refuses_a_launch_of_several_processes(tokenizer, tmp_path, monkeypatch):
    args = LycheeTrainingArguments(output_dir=str(tmp_path), max_steps=1)
    monkeypatch.setattr(LycheeTrainingArguments, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="runs in one process; this launch has 2"):
        train_span_choice(tiny_lychee(), tokenizer, [example()], args)
