"""What may replace a generated final answer, after the answer turn: "not found" (`answer_not_found`) and a span
copied from the evidence (`answer_from="evidence"`). Which rows are refused is decided first (no test reads the
answer), so that no span is copied for them; each replacement records in the row's trace what it did and keeps the
generated answer in `generated_answer_ids`.
"""

import warnings

import torch

from .extract_lychee import extract_answer


def extracted_answers(
    model, traces, answers: torch.Tensor, eos_ids: list[int], pad_id: int, tokenizer, skip=()
) -> torch.Tensor:
    """Replaces each row's generated answer by the span `extract_lychee.extract_answer` copies from the best read
    passage (+ a stop id), where there is one; the trace's `answer_source` says which rows.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its reasoner scores the candidates).
        traces (`list[LycheeTrace]`): one per row, with the generated `answer_ids`.
        answers (`torch.Tensor`): (B, T) generated answer ids.
        eos_ids / pad_id: the answer's stop ids and pad id.
        tokenizer: the model's tokenizer (None: nothing is copied).
        skip: rows not to copy for (those "not found" will replace).

    Returns:
        `torch.Tensor`: (B, T') answer ids.
    """
    if tokenizer is None or any(trace.document_text is None for trace in traces):
        warnings.warn(
            'answer_from="evidence" needs generate(tokenizer=...) and a bank that keeps its document text; '
            "answering from the working memory instead.",
            stacklevel=4,
        )
    if tokenizer is None:
        return answers
    replacements = {}
    for row, trace in enumerate(traces):
        if row in skip:
            continue
        span = extract_answer(model, tokenizer, trace, eos_ids[0])  # None without the text
        if span is not None:
            replacements[row] = tokenizer.encode(span, add_special_tokens=False) + eos_ids[:1]
            trace.generated_answer_ids = trace.answer_ids  # what it would have said
            trace.answer_ids = replacements[row]
            trace.answer_source = "evidence"
    return replace_rows(answers, replacements, pad_id)


def not_found_reasons(model, traces, memories, tokenizer=None) -> dict[int, str]:
    """The rows to answer "not found", each with why (`not_found_reason`): rows that read nothing, whose memory
    holds nothing new, or (with a `tokenizer` and a bank that keeps its text) whose question names something no
    read block contains or asks about words the document never uses. None of these tests reads the answer, so they
    run before any answer is copied (a refused row is not worth copying for).

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its config's ids).
        traces (`list[LycheeTrace]`): one per row.
        memories (`list[torch.LongTensor]`): each row's final working memory.
        tokenizer: the model's tokenizer (None: only the first two tests).

    Returns:
        `dict[int, str]`: row -> reason, for the refused rows only.
    """
    config = model.config
    if not config.unanswerable_answer_ids:
        raise ValueError(
            "answer_not_found needs unanswerable_answer_ids in the config (from_backbone builds them): set "
            "config.unanswerable_answer_ids = tokenizer.encode('Not found in the document.')."
        )
    initial = list(config.initial_memory_ids or [])
    reasons = {
        row: not_found_reason(trace, memory, initial, tokenizer)
        for row, (trace, memory) in enumerate(zip(traces, memories))
    }
    return {row: reason for row, reason in reasons.items() if reason}


def not_found_answers(
    model, traces, answers: torch.Tensor, reasons: dict[int, str], eos_ids: list[int], pad_id: int
) -> torch.Tensor:
    """Replaces the answer of each row of `reasons` (`not_found_reasons`) by the config's `unanswerable_answer_ids`
    (+ a stop id) and flags its trace `not_found`, keeping the generated answer in `generated_answer_ids`.

    Returns:
        `torch.Tensor`: (B, T') answer ids.
    """
    if not reasons:
        return answers
    text = list(model.config.unanswerable_answer_ids) + eos_ids[:1]
    for row, reason in reasons.items():
        trace = traces[row]
        trace.not_found = True
        trace.not_found_reason = reason
        trace.generated_answer_ids = trace.answer_ids  # what it would have said
        trace.answer_ids = text  # through the stop id, as generated answers are
    return replace_rows(answers, dict.fromkeys(reasons, text), pad_id)


def not_found_reason(trace, memory: torch.Tensor, initial: list[int], tokenizer=None) -> str:
    """Why the row answers nothing (the first test that holds), or `""` when it may answer."""
    if not any(record.kept for record in trace):
        return "no block was read"
    if memory.numel() == 0 or memory.tolist() == initial:
        return "the working memory holds nothing after reading"
    if tokenizer is not None and trace.names_missing(tokenizer):
        return "the question names something no read block contains"
    if tokenizer is not None and trace.subject_missing(tokenizer):
        return "the question asks about words the document never uses"
    return ""


def replace_rows(answers: torch.Tensor, replacements: dict[int, list[int]], pad_id: int) -> torch.Tensor:
    """(B, T) answer ids with the rows of `replacements` replaced by those ids and padded (T grows to fit)."""
    if not replacements:
        return answers
    width = max(answers.shape[1], *(len(ids) for ids in replacements.values()))
    padded = torch.full((answers.shape[0], width), pad_id, dtype=answers.dtype, device=answers.device)
    padded[:, : answers.shape[1]] = answers
    for row, ids in replacements.items():
        padded[row] = pad_id
        padded[row, : len(ids)] = torch.tensor(ids, dtype=answers.dtype, device=answers.device)
    return padded
