"""The prepared GPU suite runs end to end at toy sizes on CPU, so it cannot rot before a GPU shows up."""

import importlib.util
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.mark.slow
def test_gpu_suite_smoke_mode_writes_every_check_without_errors(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    out = tmp_path / "suite.md"
    assert suite.main(["--smoke", "--out", str(out)]) == 0
    table = out.read_text()
    assert "error:" not in table and "skipped" not in table
    for check in ("matmul", "compressor", "attention", "bank on host", "vs MemAgent", "bitsandbytes"):
        assert f"| {check} |" in table
    assert "sdpa vs eager" in table and "tokens/s" in table
