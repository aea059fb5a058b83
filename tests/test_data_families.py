import re

import pytest

from lychee_hf.data import FAMILIES, FAMILY_TASKS, TASKS
from lychee_hf.data.relations import HELD_OUT, TRAIN
from lychee_hf.testing import tiny_tokenizer

TARGET = 1500


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tokenizer):
    return {task: make(tokenizer, TARGET, 12, seed=3) for task, make in FAMILY_TASKS.items()}


def test_family_tasks_are_generated_tasks_of_eval_and_training():
    assert set(FAMILY_TASKS) <= set(TASKS)


@pytest.mark.parametrize("task", list(FAMILY_TASKS))
def test_family_examples_hit_their_length_within_two_percent(tokenizer, examples, task):
    for example in examples[task]:
        assert example.length_tokens == len(tokenizer.encode(example.context, add_special_tokens=False))
        assert abs(example.length_tokens - TARGET) <= 0.02 * TARGET


@pytest.mark.parametrize("task", [task for task in FAMILY_TASKS if not task.endswith("-unanswerable")])
def test_the_answer_is_stated_inside_a_gold_fact(examples, task):
    for example in examples[task]:
        (answer,) = example.answers
        gold_text = " ".join(example.context[start:end] for start, end in example.supporting)
        assert re.search(rf"\b{re.escape(answer)}\b", gold_text), (example.id, answer, gold_text)
        assert len(example.supporting) == example.meta["hops"]


@pytest.mark.parametrize("task", ["facts", "facts-heldout", "facts-rephrased"])
def test_single_fact_subject_is_named_only_by_its_gold_fact(examples, task):
    # The asked entity's name occurs once in the context, inside the gold fact: distractors are about others.
    for example in examples[task]:
        start, end = example.supporting[0]
        fact = example.context[start:end]
        names = [word for word in re.findall(r"[A-Z][a-z]+", example.question) if word in fact]
        assert names, (example.question, fact)
        for name in names:
            assert example.context.count(name) == 1, (name, example.id)


def test_training_tasks_use_only_training_families_and_phrasings(examples):
    for task in ("facts", "twohop"):
        for example in examples[task]:
            family = FAMILIES[example.meta["family"]]
            assert family.split == TRAIN
            trained = {p.text for relation in family.relations for p in relation.phrasings("fact", TRAIN)}
            assert set(example.meta["fact_phrasings"]) <= trained


def test_held_out_tasks_use_only_held_out_families(examples):
    for task in ("facts-heldout", "twohop-heldout"):
        assert all(FAMILIES[e.meta["family"]].split == HELD_OUT for e in examples[task])


def test_rephrased_task_states_facts_only_in_held_out_phrasings(examples):
    for example in examples["facts-rephrased"]:
        relation = FAMILIES[example.meta["family"]].relations[0]
        held_out = {p.text for p in relation.phrasings("fact", HELD_OUT)}
        assert example.meta["fact_phrasings"][0] in held_out


def test_every_family_kind_is_covered_and_each_split_has_single_and_two_hop_families():
    kinds = {(family.split, family.hops) for family in FAMILIES.values()}
    assert kinds == {(TRAIN, 1), (TRAIN, 2), (HELD_OUT, 1), (HELD_OUT, 2)}


def test_tasks_cycle_through_their_families(examples):
    single_train = {name for name, family in FAMILIES.items() if family.split == TRAIN and family.hops == 1}
    assert {e.meta["family"] for e in examples["facts"]} == single_train


def test_an_example_depends_on_seed_and_index_not_on_n(tokenizer, examples):
    again = FAMILY_TASKS["twohop-heldout"](tokenizer, TARGET, 3, seed=3)
    assert [e.context for e in again] == [e.context for e in examples["twohop-heldout"][:3]]
    other_seed = FAMILY_TASKS["twohop-heldout"](tokenizer, TARGET, 1, seed=4)
    assert other_seed[0].context != again[0].context


def test_two_hop_questions_name_the_first_entity_and_answer_the_second_relation(examples):
    for example in examples["twohop-heldout"]:
        first, second = (example.context[start:end] for start, end in example.supporting)
        texts = first + " " + second
        assert example.answers[0] in texts
        assert any(word in texts for word in re.findall(r"[A-Z][a-z]+", example.question))


def test_cli_help_names_every_generated_task():
    from lychee_hf.commands.arguments import GENERATED_TASKS

    assert GENERATED_TASKS.split(", ") == list(TASKS)


def test_unanswerable_questions_name_nothing_their_document_contains(tokenizer):
    from lychee_hf.modeling.evidence_lychee import missing_names

    for example in FAMILY_TASKS["facts-heldout-unanswerable"](tokenizer, 600, 4, seed=0):
        assert example.answers == [] and example.meta["unanswerable"]
        assert missing_names(example.question, example.context)  # the asked entity is not in the document
