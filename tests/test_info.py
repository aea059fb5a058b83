"""`lychee-hf info`: the embedded default without a path, clear errors for broken checkpoint configs."""

import pytest

from lychee_hf import default_model
from lychee_hf.testing import run_cli, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("argv", [[], ["--default"]])
def test_info_without_a_path_shows_the_embedded_default(checkpoint, monkeypatch, argv):
    monkeypatch.setattr(default_model, "ensure_default_model", lambda verbose=True: checkpoint)
    code, out, err = run_cli("info", *argv)
    assert code == 0, err
    assert str(checkpoint) in out and "kind" in out and "checkpoint" in out and "chunk_size" in out


def test_info_refuses_a_path_and_default_together(checkpoint):
    code, _, err = run_cli("info", checkpoint, "--default")
    assert code == 2 and "not both" in err


def test_a_broken_config_json_is_named_in_the_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    code, _, err = run_cli("info", tmp_path)
    assert code == 2 and "config.json is not valid JSON" in err


def test_a_config_json_holding_a_list_is_named_in_the_error(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    code, _, err = run_cli("info", tmp_path)
    assert code == 2 and "holds a list, not a JSON object" in err


@pytest.mark.parametrize("text, problem", [("{not json", "is not valid JSON"), ("[1]", "holds a list")])
def test_ask_with_a_broken_config_json_names_the_file(tmp_path, text, problem):
    (tmp_path / "config.json").write_text(text)
    (tmp_path / "doc.txt").write_text("Some text.")
    code, _, err = run_cli("ask", "--model", tmp_path, "--context", tmp_path / "doc.txt", "--question", "q")
    assert code == 2 and "config.json" in err and problem in err
