"""The CI canary's verdict line: when the releases beyond the range pass, it names the exact range change."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def canary():
    spec = importlib.util.spec_from_file_location("canary", ROOT / ".ci" / "canary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suggested_range_stops_at_the_minor_after_the_release_that_passed():
    assert canary().suggested_range("transformers>=5.23,<5.26", "5.26.1") == "transformers>=5.23,<5.27"


def test_the_ok_line_quotes_the_declared_range_and_its_replacement():
    module = canary()
    declared = module.declared_ranges()["transformers"]
    line = module.ok_line({"transformers": "9.1.0"})
    assert line.startswith("canary: transformers 9.1.0 ok -> move the range in pyproject.toml:")
    assert f'"{declared}" to "{declared.rsplit("<", 1)[0]}<9.2"' in line
    assert "TESTED_TRANSFORMERS" in line
