"""`--help` of the training commands stays honest: one option per meaning under one name, on/off options as one
option, the command's own options before the `TrainingArguments` ones, and a length a person reads."""

import argparse
import re

import pytest

COMMANDS = ("train-gate", "pretrain-compressor", "train-rl")
# The help of a training command holds ~15 options of its own (data, model, --out, --resume, --max-minutes), its
# config's fields (6 to 15), 4 LoRA options and the 16 listed Trainer options, 1 to 5 lines each at 80 columns,
# plus headings and examples: 127 to 156 lines today. 200 leaves room for a few more options, not for the ~110 other
# `TrainingArguments` fields (~500 lines), which stay accepted and which the Trainer heading points to instead.
MAX_HELP_LINES = 200
# TrainingArguments fields that say what an option of ours says: none of them may be an option too.
SAME_MEANING = {"output_dir": "--out", "resume_from_checkpoint": "--resume", "disable_tqdm": "--quiet"}


@pytest.fixture(scope="module")
def commands():
    from lychee_hf.cli import build_parser

    return next(a for a in build_parser()._actions if a.dest == "command").choices


def help_text(parser: argparse.ArgumentParser, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # the width a terminal gives by default, whatever runs the test
    return parser.format_help()


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def is_trainer_option(action: argparse.Action) -> bool:
    from transformers import TrainingArguments

    return action.dest in TrainingArguments.__dataclass_fields__


@pytest.mark.parametrize("command", COMMANDS)
def test_no_two_options_share_a_destination(commands, command):
    dests = [action.dest for action in options(commands[command])]
    assert len(dests) == len(set(dests)), sorted(d for d in dests if dests.count(d) > 1)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_trainer_option_repeats_an_option_of_ours(commands, command):
    from lychee_hf.commands.arguments import RENAMED_FIELDS, SET_BY_COMMAND

    assert SET_BY_COMMAND == SAME_MEANING
    parser = commands[command]
    dests = {action.dest for action in options(parser)}
    assert not dests & (set(SAME_MEANING) | set(RENAMED_FIELDS))
    strings = {s for action in options(parser) for s in action.option_strings}
    assert set(SAME_MEANING.values()) <= strings
    # The deprecated name is a hidden spelling of the new one, not a second option.
    required = ["--task", "niah"] if command == "train-gate" else []
    args = parser.parse_args([*required, "--out", "x", "--gradient-checkpointing"])
    assert args.activation_checkpointing is True


def test_each_duplicate_pair_of_before_is_one_option(commands):
    rl, pretrain = commands["train-rl"], commands["pretrain-compressor"]
    assert rl.parse_args(["--out", "x", "--no-compressor"]).train_compressor is False
    assert rl.parse_args(["--out", "x", "--no-train-compressor", "--compressor"]).train_compressor is True
    assert rl.parse_args(["--out", "x"]).train_compressor is True
    (switch,) = [a for a in options(rl) if a.dest == "train_compressor"]
    assert isinstance(switch, argparse.BooleanOptionalAction) and switch.option_strings[:2] == [
        "--compressor",
        "--no-compressor",
    ]
    (rank,) = [a for a in options(pretrain) if a.dest == "lora_r"]
    assert rank.option_strings[0] == "--compressor-lora-r" and "--lora-r" in rank.option_strings
    assert pretrain.parse_args(["--out", "x", "--lora-r", "4"]).lora_r == 4


@pytest.mark.parametrize("command", COMMANDS)
def test_on_off_options_are_one_boolean_optional_option(commands, command):
    for action in options(commands[command]):
        assert not any(s.startswith("--no_") for s in action.option_strings), action.option_strings
        if any(s.startswith("--no-") for s in action.option_strings):
            assert isinstance(action, argparse.BooleanOptionalAction), action.option_strings
        assert action.type is None or getattr(action.type, "__name__", "") != "string_to_bool", action.option_strings


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_each_option_under_one_name(commands, command, monkeypatch):
    parser = commands[command]
    text = help_text(parser, monkeypatch)
    shown = {line.split()[0].rstrip(",") for line in text.splitlines() if line.startswith("  --")}
    for action in options(parser):
        if action.help == argparse.SUPPRESS:
            assert not shown & set(action.option_strings), action.option_strings
            continue
        first = action.option_strings[0]
        assert first in shown and re.search(rf"^  {re.escape(first)}\b", text, re.M), first
        for alias in action.option_strings[1:]:
            on_its_line = rf"^  {re.escape(first)}, {re.escape(alias)}\b"
            is_off_switch = isinstance(action, argparse.BooleanOptionalAction) and alias == action.option_strings[1]
            assert is_off_switch or not re.search(on_its_line, text, re.M), alias


@pytest.mark.parametrize("command", COMMANDS)
def test_our_options_come_before_the_trainer_options(commands, command, monkeypatch):
    from lychee_hf.commands.arguments import TRAINER_HEADING, TRAINER_OPTIONS

    parser = commands[command]
    text = help_text(parser, monkeypatch)
    heading = text.index(f"\n{TRAINER_HEADING}:\n")
    listed = [action for action in options(parser) if action.help != argparse.SUPPRESS]
    for action in listed:
        place = re.search(rf"^  {re.escape(action.option_strings[0])}\b", text, re.M).start()
        assert (place > heading) == is_trainer_option(action), action.option_strings[0]
    assert sorted(a.dest for a in listed if is_trainer_option(a)) == sorted(TRAINER_OPTIONS)
    assert "huggingface.co/docs/transformers" in text[heading:]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_its_line_budget_and_hidden_trainer_options_still_parse(commands, command, monkeypatch):
    parser = commands[command]
    lines = help_text(parser, monkeypatch).splitlines()
    assert len(lines) < MAX_HELP_LINES, len(lines)
    assert lines[0].startswith(f"usage: lychee-hf {command} ") and lines[0].endswith("[options]")
    required = ["--task", "niah"] if command == "train-gate" else []
    args = parser.parse_args(
        [*required, "--out", "x", "--optim", "adafactor", "--torch_compile", "--lr-scheduler-type", "cosine"]
    )
    assert (args.optim, args.torch_compile, args.lr_scheduler_type) == ("adafactor", True, "cosine")
