import pytest

from lychee_hf.metrics import (
    METRIC_NAMES,
    exact_match,
    normalize_answer,
    score,
    substring_match,
    token_f1,
)


def test_normalize_answer_is_squad_style():
    assert normalize_answer("  The Cat, an  A-team!  ") == "cat ateam"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words


def test_exact_match_after_normalisation_and_over_every_answer():
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("a dog", ["cat", "Dog."]) == 1.0
    assert exact_match("black cat", ["cat"]) == 0.0
    assert exact_match("cat", []) == 0.0


def test_substring_match():
    assert substring_match("I think it is the Cat.", ["cat"]) == 1.0
    assert substring_match("Paris, France", ["Lyon", "france"]) == 1.0
    assert substring_match("cat", ["black cat"]) == 0.0
    assert substring_match("anything", ["the", "!"]) == 0.0  # gold answers empty after normalisation never match


def test_token_f1_partial_overlap_by_hand():
    # prediction tokens: [big, black, cat]; gold: [black, cat, sat, down]; common 2 -> P 2/3, R 2/4, F1 4/7.
    assert token_f1("The big black cat", ["black cat sat down"]) == pytest.approx(4 / 7)
    assert token_f1("The big black cat", ["black cat sat down", "big black cat"]) == 1.0
    assert token_f1("cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated tokens count once each
    assert token_f1("dog", ["cat"]) == 0.0


def test_empty_prediction_scores_zero():
    assert score("", ["cat"]) == {"em": 0.0, "sub_em": 0.0, "f1": 0.0}
    assert score("  ", ["cat"]) == {"em": 0.0, "sub_em": 0.0, "f1": 0.0}


def test_score_has_every_named_metric():
    result = score("Paris", ["paris", "Paris, France"])
    assert set(result) == set(METRIC_NAMES) and result == {"em": 1.0, "sub_em": 1.0, "f1": 1.0}
