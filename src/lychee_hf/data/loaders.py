"""Loaders for the user's own evaluation data: MemAgent/verl-style JSONL and HotpotQA JSON, as `QAExample`s."""

import json
from pathlib import Path

from ..files import read_json_lines
from .examples import QAExample


def load_memagent_jsonl(path: str | Path, tokenizer=None) -> list[QAExample]:
    """Reads one example per line in the MemAgent/verl schema.

    Each line is a JSON object with:

    * `"context"`: the long document;
    * the question in `"question"`, `"extra_info"["question"]` or `"input"`;
    * the gold answers in `"answers"` (a list) or `"answer"` (a string or a list);
    * optionally `"supporting"`: gold passages or sentences, each found verbatim in the context;
    * optionally `"id"` or `"_id"`; the line number otherwise.

    Args:
        path (`str` or `Path`): the `.jsonl` file; blank lines are skipped.
        tokenizer (*optional*): if given, fills `length_tokens`; 0 otherwise.

    Returns:
        `list[QAExample]`: with task `"jsonl"`, in file order.

    Raises:
        `FileNotFoundError` if the file is missing; `ValueError` naming `file:line` and the field for a malformed
        line, a missing or empty field, or a supporting passage absent from the context.
    """
    return [
        _memagent_example(line.checked(path), f"{path}:{line.number}", str(line.number), tokenizer)
        for line in read_json_lines(path, "data")
    ]


def load_hotpotqa_json(path: str | Path, tokenizer=None) -> list[QAExample]:
    """Reads a HotpotQA file (a JSON list, as in `hotpot_dev_distractor_v1.json`).

    Each item has `"_id"`, `"question"`, `"answer"`, `"context"` (`[[title, [sentence, ...]], ...]`) and
    `"supporting_facts"` (`[[title, sentence_index], ...]`). The column layout of the Hugging Face `hotpot_qa`
    dataset (`{"title": [...], "sentences": [...]}` and `{"title": [...], "sent_id": [...]}`) is read too. The
    context is rendered as "Document 1:\\n{title}\\n{sentences}\\n\\nDocument 2:\\n...".

    Args:
        path (`str` or `Path`): the `.json` file.
        tokenizer (*optional*): if given, fills `length_tokens`; 0 otherwise.

    Returns:
        `list[QAExample]`: with task `"hotpotqa"`; `supporting` holds the spans of the supporting sentences
        (facts pointing past a document's sentences, which the dataset has a few of, are skipped and counted in
        `meta["missing_supporting_facts"]`).

    Raises:
        `FileNotFoundError` if the file is missing; `ValueError` naming the file and item for malformed data.
    """
    path = _existing(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno} is not valid JSON ({error.msg})") from error
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path} should hold a non-empty JSON list of HotpotQA items")
    return [_hotpotqa_example(item, f"{path} item {index}", tokenizer) for index, item in enumerate(items)]


def _length_tokens(tokenizer, context: str) -> int:
    return 0 if tokenizer is None else len(tokenizer.encode(context, add_special_tokens=False))


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    return path


def _memagent_example(record: dict, where: str, line_id: str, tokenizer) -> QAExample:
    context = record.get("context")
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"{where} has no non-empty string field 'context'")
    question = _memagent_question(record, where)
    answers = _answers(record, where)
    passages = record.get("supporting") or []
    if not isinstance(passages, list):
        raise ValueError(f"{where} has a 'supporting' field that is not a list of strings")
    supporting = [_passage_span(context, passage, where) for passage in passages]
    identifier = record.get("id", record.get("_id", line_id))
    return QAExample(
        id=str(identifier),
        task="jsonl",
        context=context,
        question=question,
        answers=answers,
        supporting=supporting,
        length_tokens=_length_tokens(tokenizer, context),
        meta={"source": where},
    )


def _memagent_question(record: dict, where: str) -> str:
    extra_info = record.get("extra_info") if isinstance(record.get("extra_info"), dict) else {}
    for question in (record.get("question"), extra_info.get("question"), record.get("input")):
        if isinstance(question, str) and question.strip():
            return question
    raise ValueError(f"{where} has no question: expected a non-empty 'question' or 'extra_info.question'")


def _answers(record: dict, where: str) -> list[str]:
    value = record.get("answers", record.get("answer"))
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} has no answers: expected 'answers' (a list) or 'answer' (a string or a list)")
    return [str(answer) for answer in value]


def _passage_span(context: str, passage, where: str) -> tuple[int, int]:
    if not isinstance(passage, str) or not passage.strip():
        raise ValueError(f"{where} has a 'supporting' entry that is not a non-empty string: {passage!r}")
    passage = passage.strip()
    start = context.find(passage)
    if start < 0:
        raise ValueError(f"{where} has a 'supporting' passage not found in its context: {passage[:80]!r}")
    return start, start + len(passage)


def _hotpotqa_example(item, where: str, tokenizer) -> QAExample:
    if not isinstance(item, dict):
        raise ValueError(f"{where} should be a JSON object, got {type(item).__name__}")
    for name in ("question", "answer", "context"):
        if name not in item:
            raise ValueError(f"{where} has no field {name!r}")
    documents = _hotpotqa_documents(item["context"], where)
    context, sentence_spans = _render_documents(documents)
    supporting, missing = [], 0
    for title, sentence in _hotpotqa_supporting_facts(item.get("supporting_facts", []), where):
        span = sentence_spans.get((title, sentence))
        if span is None:
            missing += 1
        else:
            supporting.append(span)
    return QAExample(
        id=str(item.get("_id", item.get("id", where))),
        task="hotpotqa",
        context=context,
        question=str(item["question"]),
        answers=_answers(item, where),
        supporting=sorted(set(supporting)),
        length_tokens=_length_tokens(tokenizer, context),
        meta={
            "source": where,
            "type": item.get("type"),
            "level": item.get("level"),
            "missing_supporting_facts": missing,
        },
    )


def _hotpotqa_documents(context, where: str) -> list[tuple[str, list[str]]]:
    if isinstance(context, dict):  # Hugging Face column layout
        context = list(zip(context.get("title", []), context.get("sentences", [])))
    documents = []
    for entry in context if isinstance(context, list) else []:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], list)):
            raise ValueError(f"{where} has a context entry that is not [title, [sentences...]]: {str(entry)[:80]}")
        documents.append((str(entry[0]), [str(sentence) for sentence in entry[1]]))
    if not documents:
        raise ValueError(f"{where} has an empty or malformed 'context'")
    return documents


def _hotpotqa_supporting_facts(facts, where: str) -> list[tuple[str, int]]:
    if isinstance(facts, dict):  # Hugging Face column layout
        facts = list(zip(facts.get("title", []), facts.get("sent_id", [])))
    pairs = []
    for fact in facts:
        if not (isinstance(fact, (list, tuple)) and len(fact) == 2 and isinstance(fact[1], int)):
            raise ValueError(f"{where} has a supporting fact that is not [title, sentence_index]: {fact!r}")
        pairs.append((str(fact[0]), fact[1]))
    return pairs


def _render_documents(documents: list[tuple[str, list[str]]]) -> tuple[str, dict[tuple[str, int], tuple[int, int]]]:
    """The "Document i:" context and, for each (title, sentence index), the span of the stripped sentence."""
    parts: list[str] = []
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    position = 0
    for number, (title, sentences) in enumerate(documents, start=1):
        header = ("\n\n" if parts else "") + f"Document {number}:\n{title}\n"
        parts.append(header)
        position += len(header)
        body = ""
        for index, sentence in enumerate(sentences):
            # HotpotQA sentences usually carry their own leading space; add one only where two would touch.
            if body and not body[-1].isspace() and sentence and not sentence[0].isspace():
                body += " "
            stripped = sentence.strip()
            start = position + len(body) + (len(sentence) - len(sentence.lstrip()))
            if stripped:
                spans.setdefault((title, index), (start, start + len(stripped)))
            body += sentence
        parts.append(body)
        position += len(body)
    return "".join(parts), spans
