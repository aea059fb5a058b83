import pytest

from lychee_hf.data import HELD_OUT_TASKS, TASKS
from lychee_hf.data.genres import GENRE_HELD_OUT_TASKS, GENRE_TASKS, GENRES, genres, make_genre_examples
from lychee_hf.data.relations import HELD_OUT, TRAIN
from lychee_hf.testing import tiny_tokenizer

TARGET = 1500


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tokenizer):
    sizes = {"genres": 8, "genres-heldout": 6, "genres-heldout-unanswerable": 6}
    return {task: make(tokenizer, TARGET, sizes.get(task, 2), seed=3) for task, make in GENRE_TASKS.items()}


def _answerable(examples):
    return [example for task, rows in examples.items() if "unanswerable" not in task for example in rows]


def test_genre_tasks_are_generated_tasks_and_held_out_ones_are_refused_by_training():
    from lychee_hf.training import check_trainable

    assert set(GENRE_TASKS) <= set(TASKS)
    assert set(GENRE_HELD_OUT_TASKS) <= set(HELD_OUT_TASKS)
    assert "genres" not in HELD_OUT_TASKS
    check_trainable(["genres", "facts"])
    for task in GENRE_HELD_OUT_TASKS:
        with pytest.raises(ValueError, match="held out"):
            check_trainable(["genres", task])


def test_training_and_held_out_genres_are_disjoint_and_cover_at_least_seven_genres():
    train, held_out = {g.name for g in genres(TRAIN)}, {g.name for g in genres(HELD_OUT)}
    assert train and held_out and not train & held_out
    assert train | held_out == set(GENRES) and len(GENRES) >= 7
    assert {"genres-heldout:" + name for name in held_out} <= set(GENRE_TASKS)


def test_tasks_draw_only_their_split_and_every_kind_in_turn(examples):
    assert {e.meta["genre_split"] for e in examples["genres"]} == {TRAIN}
    assert {e.meta["genre"] for e in examples["genres"]} == {g.name for g in genres(TRAIN)}
    for task in ("genres-heldout", "genres-heldout-unanswerable"):
        assert {e.meta["genre"] for e in examples[task]} == {g.name for g in genres(HELD_OUT)}
    for genre in genres(HELD_OUT):
        assert {e.meta["genre"] for e in examples[f"genres-heldout:{genre.name}"]} == {genre.name}
    minutes = [e.meta["kind"] for e in examples["genres"] if e.meta["genre"] == "minutes"]
    assert minutes == [kind.name for kind in GENRES["minutes"].plan.kinds[: len(minutes)]]


@pytest.mark.parametrize("task", list(GENRE_TASKS))
def test_genre_documents_hit_their_length_within_two_percent(tokenizer, examples, task):
    for example in examples[task]:
        assert example.length_tokens == len(tokenizer.encode(example.context, add_special_tokens=False))
        assert abs(example.length_tokens - TARGET) <= 0.02 * TARGET


def test_the_answer_stands_once_verbatim_inside_the_recorded_gold_fact(examples):
    for example in _answerable(examples):
        (answer,) = example.answers
        ((start, end),) = example.supporting
        fact = example.context[start:end]
        assert answer in fact, (example.id, answer, fact)
        assert example.context.count(answer) == 1, (example.id, answer)
        assert fact.strip() == fact and len(fact) > len(answer)
        assert example.meta["subject"].lower() in fact.lower()  # every fact names its subject verbatim


def test_the_topic_recurs_throughout_the_document(examples):
    for example in _answerable(examples):
        topic, size = example.meta["topic"].lower(), len(example.context) // 3
        thirds = [example.context[i * size : (i + 1) * size].lower() for i in range(3)]
        assert all(topic in third for third in thirds), (example.id, topic)


def test_every_kind_states_two_values_of_the_answer_type_in_several_phrasings():
    for genre in GENRES.values():
        assert len(genre.plan.kinds) >= 3
        for kind in genre.plan.kinds:
            assert len(kind.facts) >= 2 and len(kind.questions) >= 3 and len(kind.subjects) >= 8, kind.name
            for template in kind.facts:
                if "{" in template:  # report rows are laid out by the table, with the other value in a column
                    assert "{answer}" in template and "{other}" in template and "{subject" in template, template
                    assert template.count("{answer}") == 1


def test_an_example_depends_on_seed_and_index_not_on_n(tokenizer, examples):
    again = GENRE_TASKS["genres-heldout"](tokenizer, TARGET, 2, seed=3)
    assert [(e.context, e.question) for e in again] == [(e.context, e.question) for e in examples["genres-heldout"][:2]]
    assert GENRE_TASKS["genres-heldout"](tokenizer, TARGET, 1, seed=4)[0].context != again[0].context
    assert len({e.context for e in examples["genres"]}) == len(examples["genres"])


def test_unanswerable_questions_ask_the_same_documents_about_what_they_never_name(examples):
    answerable, unanswerable = examples["genres-heldout"], examples["genres-heldout-unanswerable"]
    for example, other in zip(answerable, unanswerable, strict=True):
        assert other.context == example.context and other.question != example.question
        assert other.answers == [] and other.supporting == [] and other.meta["unanswerable"]
        assert other.meta["absent"].lower() not in other.context.lower()
        assert other.meta["absent"] in other.question
        assert other.task == "genres-heldout-unanswerable"


def test_a_single_genre_gives_its_unanswerable_variant(tokenizer):
    (example,) = make_genre_examples(
        "genres-heldout:faq", [GENRES["faq"]], tokenizer, TARGET, 1, seed=3, unanswerable=True
    )
    assert example.task == "genres-heldout-unanswerable:faq" and example.meta["genre"] == "faq"


def test_too_short_a_length_is_refused_with_the_genre_named(tokenizer):
    with pytest.raises(ValueError, match="too short for the minutes genre"):
        GENRE_TASKS["genres"](tokenizer, 200, 1)
