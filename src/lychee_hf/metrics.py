"""Answer metrics after SQuAD-style normalisation: exact match, substring match (sub-EM) and token F1."""

import re
import string
from collections import Counter

METRIC_NAMES = {"em": "exact match", "sub_em": "substring match (sub-EM)", "f1": "token F1"}

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, collapse whitespace.

    Args:
        text (`str`): an answer or a prediction.

    Returns:
        `str`: the normalised text, words separated by single spaces.
    """
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(answer) for answer in answers))


def substring_match(prediction: str, answers: list[str]) -> float:
    """1.0 if any non-empty normalised gold answer is contained in the normalised prediction, else 0.0."""
    predicted = normalize_answer(prediction)
    golds = (normalize_answer(answer) for answer in answers)
    return float(any(gold and gold in predicted for gold in golds))


def token_f1(prediction: str, answers: list[str]) -> float:
    """SQuAD token F1 between the normalised prediction and the best-matching gold answer.

    Args:
        prediction (`str`): the model's answer.
        answers (`list[str]`): gold answers.

    Returns:
        `float`: the harmonic mean of token precision and recall, maximised over `answers` (0.0 if there are none).
    """
    predicted = normalize_answer(prediction).split()
    return max((_f1(predicted, normalize_answer(answer).split()) for answer in answers), default=0.0)


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, answers: list[str]) -> dict[str, float]:
    """Every metric of `METRIC_NAMES` for one prediction.

    Args:
        prediction (`str`): the model's answer.
        answers (`list[str]`): gold answers; matching any one counts.

    Returns:
        `dict[str, float]`: `{"em": ..., "sub_em": ..., "f1": ...}`, each in [0, 1].
    """
    return {
        "em": exact_match(prediction, answers),
        "sub_em": substring_match(prediction, answers),
        "f1": token_f1(prediction, answers),
    }


def classification_metrics(scores: list[float], labels: list[int], threshold: float = 0.5) -> dict[str, float]:
    """Binary-classifier quality: precision, recall, F1 and accuracy at `threshold`, and AUROC.

    Args:
        scores (`list[float]`): predicted probabilities (or any scores ordered like them) of the positive class.
        labels (`list[int]`): gold labels, 1 positive and 0 negative.
        threshold (`float`, *optional*, defaults to 0.5): a score at least this is a positive prediction.

    Returns:
        `dict`: `precision`, `recall`, `f1`, `accuracy`, `auroc` (NaN when only one class is present),
        `positive_rate` (share of gold positives), `predicted_positive_rate` and `n`.
    """
    if len(scores) != len(labels):
        raise ValueError(f"Got {len(scores)} scores for {len(labels)} labels.")
    predicted = [score >= threshold for score in scores]
    true_positive = sum(p and y == 1 for p, y in zip(predicted, labels))
    precision = true_positive / max(sum(predicted), 1)
    recall = true_positive / max(sum(labels), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(labels)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": sum(p == (y == 1) for p, y in zip(predicted, labels)) / max(n, 1),
        "auroc": auroc(scores, labels),
        "positive_rate": sum(labels) / max(n, 1),
        "predicted_positive_rate": sum(predicted) / max(n, 1),
        "n": n,
    }


def auroc(scores: list[float], labels: list[int]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties count half)."""
    positives = [s for s, y in zip(scores, labels) if y == 1]
    negatives = [s for s, y in zip(scores, labels) if y != 1]
    if not positives or not negatives:
        return float("nan")
    # Mann-Whitney U from average ranks, O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    positive_rank_sum = sum(rank for rank, y in zip(ranks, labels) if y == 1)
    u = positive_rank_sum - len(positives) * (len(positives) + 1) / 2
    return u / (len(positives) * len(negatives))
