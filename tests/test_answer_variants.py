"""The copy constraint of `benchmarks/answer_variants.py`: an answer may only continue a sequence of the passages."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "answer_variants.py"


def load_script():
    spec = importlib.util.spec_from_file_location("answer_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_answer_token_may_be_any_passage_token():
    copy = load_script().CopyFromSource([5, 6, 7, 6, 8], prompt_length=2, stop_ids=[0])
    assert copy.allowed([]) == {5, 6, 7, 8}


def test_later_tokens_continue_an_occurrence_of_what_was_copied_or_stop():
    copy = load_script().CopyFromSource([5, 6, 7, 6, 8], prompt_length=2, stop_ids=[0])
    assert copy.allowed([6]) == {7, 8, 0}
    assert copy.allowed([5, 6]) == {7, 0}
    assert copy.allowed([6, 8]) == {0}  # the passages end there


def test_tokens_outside_the_passages_get_no_probability():
    copy = load_script().CopyFromSource([3, 4], prompt_length=1, stop_ids=[0])
    scores = torch.zeros(1, 6)
    masked = copy(torch.tensor([[9, 3]]), scores)
    assert masked[0].isfinite().nonzero().flatten().tolist() == [0, 4]
