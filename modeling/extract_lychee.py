"""An extractive final answer: the name, number or code of the best passage that the reasoner finds most likely.

A 135M reasoner that has read the right block still often answers with another value of the asked kind from the
same sentence ("87 days" for "37 days"), or with a word lifted from the question. With `answer_from="evidence"` the
answer is instead copied from the document: the read blocks' sentences are ranked against the question and the
final working memory (`evidence_lychee.rank_evidence`), the best one's name-, number- and code-like spans (and the
reasoner's generated answer, where the passage holds it word for word: "rye bread" is no name) are the
candidates (the first of the best three that holds any; for a passage that is the document's own question, the
passage after it), and the reasoner's own final turn (its adapter and template, the passage in place of the memory)
scores each as an answer followed by its stop token. The candidate with the highest mean log-probability per
token wins, so the model still chooses, but only among exact spans of the document: names and numbers come out
as written, and the answer's passage is its evidence.
"""

import re

import torch

from .adapters_lychee import role_adapter
from .compat_lychee import cache_kwargs, output_cache
from .evidence_lychee import _STOP, _WORD, following_passage, words
from .prompts_lychee import build_prompt

# A passage's list or section label is no answer: "2.3 ", "4. ", "Q: ", "A) ", "(b) ", "- ".
_LABEL = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[A-Z]\d*[:.)]|\(?[a-z0-9]\)|[-*\u2022])\s+")
# A word, number or code; a comma between digits belongs to its number ("1,350,000").
_TOKEN = re.compile(r"(?:[^\s,;()\"]|(?<=\d),(?=\d))+")
_DIGIT = re.compile(r"\d")
# Code-like: a file name, a path, an identifier (`journal-state-v5.json`, `bank_users_v3.csv`, `a/b`), an option.
_CODE = re.compile(r"\w[._/]\w|^-{1,2}\w|\w-\w*\d")
_NAME_WORDS = 4  # longest run of capitalised words taken as one name ("Avocet Property Services Ltd" is four)
_UNIT_WORDS = 2  # words after a number kept with it ("37 days", "1 December 2025")
# Best-ranked passages looked at, in order, for one that holds a candidate (a passage of the question's own words
# only, such as a heading, holds none).
PASSAGES_TRIED = 3


def answer_candidates(passage: str, question: str) -> list[str]:
    """The spans of `passage` that may answer `question`: numbers and codes (alone and with the one or two words
    after them, or the capitalised word before them), and runs of up to four capitalised words, minus the
    passage's leading label, spans made only of the question's own words, and a lone capitalised first word.

    Args:
        passage (`str`): one sentence or line of the document.
        question (`str`): the question asked.

    Returns:
        `list[str]`: distinct spans, in the order they occur.
    """
    label = _LABEL.match(passage)
    start = label.end() if label else 0
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(passage, start)]
    asked = set(words(question)) | _STOP
    found: dict[str, None] = {}

    def add(first: int, last: int) -> None:
        # A span never crosses a clause's punctuation ("2024, and Hana", "Byrne; Ashworth") or a table's column
        # gap ("£200,500      £293,250"): its words are one space apart.
        for k in range(first, last):
            if passage[tokens[k][1] : tokens[k + 1][0]] != " " or passage[tokens[k][1] - 1] in ".:!?":
                return
        span = passage[tokens[first][0] : tokens[last][1]].rstrip(".,;:!?")
        if span and not span.endswith(":") and not {w.lower() for w in _WORD.findall(span)} <= asked:
            found.setdefault(span)

    for i, (begin, end) in enumerate(tokens):
        token = passage[begin:end].rstrip(".,;:!?")
        if _DIGIT.search(token) or _CODE.search(token):
            add(i, i)
            for width in range(1, _UNIT_WORDS + 1):
                if i + width < len(tokens):
                    add(i, i + width)
            if i > 0 and passage[tokens[i - 1][0]].isupper():
                add(i - 1, i)
        elif token[:1].isupper():
            for last in range(i, min(i + _NAME_WORDS, len(tokens))):
                if not passage[tokens[last][0]].isupper():
                    break
                # The sentence's first word is capitalised whatever it is; a lone capital is a pronoun or a letter.
                if not (last == i and (i == 0 or end - begin == 1)):
                    add(i, last)
    return list(found)


def copied_span(passage: str, answer: str) -> str | None:
    """`answer` as `passage` writes it (its casing), when the passage holds it as whole words."""
    if not answer:
        return None
    found = re.search(r"(?<!\w)" + re.escape(answer) + r"(?!\w)", passage, flags=re.IGNORECASE)
    return found.group(0) if found else None


def candidate_log_probs(
    model: torch.nn.Module, question_ids: list[int], passage_ids: list[int], candidates: list[list[int]], stop_id: int
) -> torch.Tensor:
    """Mean log-probability per token of each candidate answer (plus `stop_id`) in the reasoner's final turn with
    `passage_ids` as the memory, differentiable (the span-choice objective trains on it; `candidate_scores` is the
    same without gradients).

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its `reasoner` adapter and `final_template_ids`).
        question_ids / passage_ids (`list[int]`): the question and the passage, as token ids.
        candidates (`list[list[int]]`): each candidate's token ids.
        stop_id (`int`): the token that ends an answer (scored too: it says whether the span is whole).

    Returns:
        `torch.Tensor` of shape (len(candidates),), float32.
    """
    device = model.device
    prompt = build_prompt(
        model.config.final_template_ids,
        torch.tensor(question_ids, dtype=torch.long, device=device),
        torch.tensor(passage_ids, dtype=torch.long, device=device),
    )
    rows = [ids + [stop_id] for ids in candidates]
    longest = max(map(len, rows))
    with role_adapter(model, "reasoner"):
        # The prompt runs once; its cache, repeated per candidate, is the prefix every candidate continues.
        prompt_out = model(input_ids=prompt[None], use_cache=True)
        first_logprobs = prompt_out.logits[0, -1].float().log_softmax(-1)  # (V,): each candidate's first token
        cache = output_cache(prompt_out)
        cache.batch_repeat_interleave(len(rows))
        # (B, longest) right-padded candidates after the shared prompt; padding is masked and never scored.
        ids = torch.full((len(rows), longest), stop_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), prompt.numel() + longest), dtype=torch.long, device=device)
        mask[:, : prompt.numel()] = 1
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row, device=device)
            mask[r, prompt.numel() : prompt.numel() + len(row)] = 1
        positions = torch.arange(prompt.numel(), prompt.numel() + longest, device=device).expand(len(rows), -1)
        logprobs = model(input_ids=ids, attention_mask=mask, position_ids=positions, **cache_kwargs(cache))
        logprobs = logprobs.logits.float().log_softmax(-1)  # (B, longest, V): position t predicts token t + 1
    scores = []
    for r, row in enumerate(rows):
        tokens = torch.tensor(row, device=device)
        rest = logprobs[r, torch.arange(len(row) - 1, device=device), tokens[1:]]
        scores.append(torch.cat([first_logprobs[tokens[:1]], rest]).mean())
    return torch.stack(scores)


def candidate_scores(
    model: torch.nn.Module, question_ids: list[int], passage_ids: list[int], candidates: list[list[int]], stop_id: int
) -> list[float]:
    """`candidate_log_probs` without gradients, as a list: the scores `extract_answer` ranks candidates by."""
    with torch.no_grad():
        return candidate_log_probs(model, question_ids, passage_ids, candidates, stop_id).tolist()


def extract_answer(model: torch.nn.Module, tokenizer, trace, stop_id: int) -> str | None:
    """The extractive answer of one row (see the module's docstring), or None when its bank keeps no text, nothing
    was read, or none of the `PASSAGES_TRIED` best passages holds a candidate. A passage that asks a question (the
    document's own, as in an FAQ) stands for the passage after it, which answers it.

    Args:
        model (`LycheeMemoryForCausalLM`): the model that read the blocks.
        tokenizer: its tokenizer.
        trace (`LycheeTrace`): the row's trace (read blocks, final memory, document text, generated answer).
        stop_id (`int`): the answer's stop token.

    Returns:
        `str` or `None`.
    """
    ranked = trace.ranked_passages(tokenizer, answer="", top_k=PASSAGES_TRIED)
    if not ranked:
        return None
    question = tokenizer.decode(trace.question_ids, skip_special_tokens=True)
    # What the reasoner generated (kept apart once "not found" replaced it: an evaluation may still ask this).
    generated_ids = trace.generated_answer_ids or trace.answer_ids
    generated = tokenizer.decode(generated_ids, skip_special_tokens=True).strip().rstrip(".")
    document = trace.document_text.text
    for passage in ranked:
        text = passage.text
        if text.rstrip().endswith("?"):  # the document's own question (an FAQ, an interview): its answer follows
            following = following_passage(document, passage.end)
            text = document[following[0] : following[1]] if following else ""
        candidates = answer_candidates(text, question)
        copied = copied_span(text, generated)
        if copied and copied not in candidates:  # an answer no pattern finds ("rye bread"), said by the reasoner
            candidates.append(copied)
        if candidates:
            passage_ids = tokenizer.encode(text, add_special_tokens=False)
            candidate_ids = [tokenizer.encode(span, add_special_tokens=False) for span in candidates]
            scores = candidate_scores(model, list(trace.question_ids), passage_ids, candidate_ids, stop_id)
            return candidates[max(range(len(candidates)), key=scores.__getitem__)]
    return None
