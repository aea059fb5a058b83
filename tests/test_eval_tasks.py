import dataclasses
import json
import re

import pytest

from lychee_hf.data import (
    TASKS,
    load_hotpotqa_json,
    load_memagent_jsonl,
    make_mhqa,
    make_niah,
    make_vt,
    parse_length,
    supporting_chunks,
)
from lychee_hf.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def occurrences(text: str, needle: str) -> list[int]:
    return [match.start() for match in re.finditer(re.escape(needle), text)]


def inside_spans(position: int, length: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position and position + length <= end for start, end in spans)


# Lengths -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["mhqa", "niah", "vt"])
@pytest.mark.parametrize("target", [2000, 8000])
def test_lengths_hit_their_targets_within_two_percent(tokenizer, task, target):
    for example in TASKS[task](tokenizer, target, 2, seed=7):
        assert example.length_tokens == len(tokenizer.encode(example.context, add_special_tokens=False))
        assert abs(example.length_tokens - target) <= 0.02 * target
        assert example.meta["target_tokens"] == target and example.meta["seed"] == 7


def test_mhqa_scales_to_a_longer_context(tokenizer):
    (example,) = make_mhqa(tokenizer, 64000, 1, seed=1)
    assert abs(example.length_tokens - 64000) <= 0.02 * 64000
    assert example.context.count("Document ") > 500


def test_too_short_a_target_and_bad_arguments_are_refused(tokenizer):
    with pytest.raises(ValueError, match="too short"):
        make_vt(tokenizer, 20, 1)
    with pytest.raises(ValueError, match="depth"):
        make_niah(tokenizer, 2000, 1, depth=1.5)
    with pytest.raises(ValueError, match="num_keys"):
        make_niah(tokenizer, 2000, 1, num_keys=0)


# Seeds -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["mhqa", "niah", "vt"])
def test_seeds_reproduce_and_example_i_does_not_depend_on_n(tokenizer, task):
    three = TASKS[task](tokenizer, 1500, 3, seed=5)
    five = TASKS[task](tokenizer, 1500, 5, seed=5)
    assert three == TASKS[task](tokenizer, 1500, 3, seed=5)
    assert five[:3] == three
    assert len({example.context for example in five}) == 5
    assert TASKS[task](tokenizer, 1500, 1, seed=6)[0].context != three[0].context


# Answers follow from the gold facts only -----------------------------------------------------------------------


def test_mhqa_answer_follows_from_the_two_gold_documents_only(tokenizer):
    for example in make_mhqa(tokenizer, 4000, 4, seed=2):
        person, city, country = example.meta["person"], example.meta["city"], example.meta["country"]
        assert example.question == f"In which country was {person} born?" and example.answers == [country]
        assert len(example.supporting) == 2
        gold = [example.context[start:end] for start, end in example.supporting]
        assert all(text.startswith("Document ") for text in gold)
        assert any(f"{person} was born in {city}." in text for text in gold)
        assert any(f"{city} is the capital of {country}." in text for text in gold)
        for name in (person, city, country):
            positions = occurrences(example.context, name)
            assert positions and all(inside_spans(p, len(name), example.supporting) for p in positions), name
        # Distractors use the same templates, and no city is the capital of two countries.
        capitals = re.findall(r"(\w+) is the capital of (\w+)\.", example.context)
        births = re.findall(r"(\w+ \w+) was born in (\w+)\.", example.context)
        assert len(capitals) > 3 and len(births) > 3
        assert len({c for c, _ in capitals}) == len(capitals) and len({k for _, k in capitals}) == len(capitals)
        assert len({p for p, _ in births}) == len(births)


@pytest.mark.parametrize("num_keys", [1, 4])
def test_niah_number_appears_only_in_the_asked_needle(tokenizer, num_keys):
    for example in make_niah(tokenizer, 3000, 3, seed=4, num_keys=num_keys):
        (number,) = example.answers
        assert re.fullmatch(r"\d{7}", number)
        (span,) = example.supporting
        assert example.context[slice(*span)] == f"The special magic number for {example.meta['asked_key']} is {number}."
        assert example.question == f"What is the special magic number for {example.meta['asked_key']}?"
        assert occurrences(example.context, number) == [example.context.index(number, span[0])]
        assert example.context.count("The special magic number for") == num_keys
        assert len(example.meta["keys"]) == num_keys and len(re.findall(r"\d+", example.context)) == num_keys


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_niah_depth_places_the_asked_needle(tokenizer, depth):
    for example in make_niah(tokenizer, 4000, 2, seed=1, num_keys=3, depth=depth):
        start, end = example.supporting[0]
        assert example.meta["depth"] == depth
        assert abs((start + end) / 2 / len(example.context) - depth) < 0.05


def test_vt_answer_is_the_asked_chain_in_order(tokenizer):
    for example in make_vt(tokenizer, 3000, 3, seed=3, hops=3):
        names, value = example.meta["variables"], example.meta["value"]
        assert example.answers == [", ".join(names)] and len(names) == 4
        assert example.question == f"Which variables are assigned the value {value}? List all of them."
        statements = [example.context[start:end] for start, end in example.supporting]
        assert statements[0] == f"VAR {names[0]} = {value}."
        assert statements[1:] == [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        assert example.supporting == sorted(example.supporting)
        for name in [*names, value]:
            positions = occurrences(example.context, name)
            assert positions and all(inside_spans(p, len(name), example.supporting) for p in positions), name
        assert example.context.count("VAR ") > 2 * len(names)  # distractor chains


# Chunks ------------------------------------------------------------------------------------------------------


class SlowView:
    """The tokenizer seen as a slow one (no offset mapping), to exercise the prefix-counting path."""

    is_fast = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        kwargs.pop("return_offsets_mapping", None)
        return self.tokenizer(text, **kwargs)

    def encode(self, text, **kwargs):
        return self.tokenizer.encode(text, **kwargs)


@pytest.mark.parametrize("task", ["mhqa", "niah", "vt"])
def test_supporting_chunks_hold_the_gold_facts(tokenizer, task):
    chunk_size = 128
    (example,) = TASKS[task](tokenizer, 3000, 1, seed=11)
    ids = tokenizer.encode(example.context, add_special_tokens=False)
    every = supporting_chunks(example, tokenizer, chunk_size)
    assert every == sorted(set(every)) and every
    for span in example.supporting:
        chunks = supporting_chunks(dataclasses.replace(example, supporting=[span]), tokenizer, chunk_size)
        assert chunks == list(range(chunks[0], chunks[-1] + 1)) and set(chunks) <= set(every)
        text = tokenizer.decode(ids[chunks[0] * chunk_size : (chunks[-1] + 1) * chunk_size])
        assert example.context[slice(*span)] in text
        if chunks[0] > 0:  # the chunk before does not hold the fact's first token
            before = tokenizer.decode(ids[(chunks[0] - 1) * chunk_size : chunks[0] * chunk_size])
            assert example.context[slice(*span)] not in before
    assert supporting_chunks(example, SlowView(tokenizer), chunk_size) == every


# Lengths on the command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"), [("7k", 7000), ("112K", 112000), ("1m", 1_000_000), ("4096", 4096), ("1.5k", 1500)]
)
def test_parse_length(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize("text", ["", "7x", "k", "-5", "0", "1.2345k"])
def test_parse_length_names_a_bad_input(text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_length(text)


# Loaders -----------------------------------------------------------------------------------------------------


def write_jsonl(path, rows) -> None:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")


def test_memagent_jsonl_reads_both_question_and_answer_layouts(tmp_path, tokenizer):
    context = "Alice was born in Paris. Paris is the capital of France. The quick brown fox."
    path = tmp_path / "data.jsonl"
    write_jsonl(
        path,
        [
            {"id": "a", "context": context, "question": "Where?", "answers": ["France", "FR"]},
            {"_id": "b", "context": context, "extra_info": {"question": "Country?"}, "answer": "France"},
            "",
            {"context": context, "question": "Which?", "answer": ["France"], "supporting": ["Paris is the capital"]},
        ],
    )
    first, second, third = load_memagent_jsonl(path)
    assert (first.id, first.question, first.answers, first.task) == ("a", "Where?", ["France", "FR"], "jsonl")
    assert (second.id, second.question, second.answers) == ("b", "Country?", ["France"])
    assert third.id == "4" and third.answers == ["France"]
    assert [context[start:end] for start, end in third.supporting] == ["Paris is the capital"]
    assert first.supporting == [] and first.length_tokens == 0
    (with_length, *_) = load_memagent_jsonl(path, tokenizer=tokenizer)
    assert with_length.length_tokens == len(tokenizer.encode(context, add_special_tokens=False))


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "data.jsonl:2 is not valid JSON"),
        (json.dumps({"context": "text", "answers": ["x"]}), "data.jsonl:2 has no question"),
        (json.dumps({"context": "text", "question": "q"}), "data.jsonl:2 has no answers"),
        (json.dumps({"question": "q", "answer": "x"}), "data.jsonl:2 has no non-empty string field 'context'"),
        (json.dumps({"context": "text", "question": "q", "answer": "x", "supporting": ["absent"]}), "not found"),
    ],
)
def test_memagent_jsonl_names_the_file_line_and_field_of_a_bad_row(tmp_path, bad_line, message):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"context": "text", "question": "q", "answer": "x"}, bad_line])
    with pytest.raises(ValueError, match=re.escape(message)):
        load_memagent_jsonl(path)


def test_hotpotqa_json_renders_documents_and_locates_supporting_sentences(tmp_path):
    items = [
        {
            "_id": "5a8b",
            "question": "Which country is Alice's birthplace the capital of?",
            "answer": "France",
            "type": "bridge",
            "level": "hard",
            "context": [
                ["Alice", ["Alice is a painter.", " She was born in Paris."]],
                ["Paris", ["Paris is the capital of France.", " It has a tower."]],
            ],
            "supporting_facts": [["Alice", 1], ["Paris", 0], ["Paris", 7]],
        }
    ]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(items))
    (example,) = load_hotpotqa_json(path)
    assert example.context == (
        "Document 1:\nAlice\nAlice is a painter. She was born in Paris.\n\n"
        "Document 2:\nParis\nParis is the capital of France. It has a tower."
    )
    assert [example.context[start:end] for start, end in example.supporting] == [
        "She was born in Paris.",
        "Paris is the capital of France.",
    ]
    assert (example.id, example.task, example.answers) == ("5a8b", "hotpotqa", ["France"])
    assert example.meta["missing_supporting_facts"] == 1 and example.meta["type"] == "bridge"


def test_hotpotqa_json_names_the_item_missing_a_field(tmp_path):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([{"_id": "x", "question": "q", "context": [["T", ["s."]]], "supporting_facts": []}]))
    with pytest.raises(ValueError, match=r"hotpot\.json item 0 has no field 'answer'"):
        load_hotpotqa_json(path)
