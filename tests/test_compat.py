"""The supported transformers range: one place where releases differ, the declared range, and the import check."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lychee_hf.modeling.compat_lychee import CACHE_ARG, TESTED_TRANSFORMERS, cache_kwargs, check_transformers_version
from lychee_hf.modeling.prefix_lychee import block_prefix
from lychee_hf.testing import document_ids, question_ids, tiny_lychee

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.compat


def _declared_range(package: str) -> tuple[str, str]:
    """(lower, upper) of `package>=lower,<upper` in pyproject.toml's dependencies."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([0-9.]+),<([0-9.]+)"', text)
    assert match, f"pyproject.toml declares no '{package}>=X,<Y' range"
    return match.group(1), match.group(2)


def test_modeling_checks_the_range_pyproject_declares():
    lower, upper = _declared_range("transformers")
    assert (TESTED_TRANSFORMERS[0].removesuffix(".0"), TESTED_TRANSFORMERS[1]) == (lower.removesuffix(".0"), upper)


@pytest.mark.parametrize("package", ["transformers", "peft", "accelerate"])
def test_ci_lowest_pins_are_the_declared_lower_bounds(package):
    lines = (ROOT / ".ci" / "lowest.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    lower, _ = _declared_range(package)
    assert pins[package].removesuffix(".0") == lower.removesuffix(".0")


def test_a_release_inside_the_range_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transformers_version(TESTED_TRANSFORMERS[0])


@pytest.mark.parametrize("installed", ["5.22.2", "5.26.0", "6.0.0"])
def test_a_release_outside_the_range_warns_with_both_versions(installed):
    with pytest.warns(
        UserWarning, match=rf"tested on transformers >={TESTED_TRANSFORMERS[0]}.*{installed} is installed"
    ):
        check_transformers_version(installed)


def test_transformers_4_is_refused_with_the_install_command():
    with pytest.raises(ImportError, match=r"pip install 'transformers>="):
        check_transformers_version("4.57.6")


def test_generate_over_a_context_raises_no_deprecation_warning(tokenizer):
    model = tiny_lychee(gate_type="query_likelihood")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate(input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 150), max_new_tokens=4)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not [m for m in deprecations if "cache" in m or "past_key_values" in m], deprecations


def test_forward_takes_the_cache_under_either_name(tokenizer):
    model = tiny_lychee()
    block = model.compress(document_ids(tokenizer, 64)).block(0)
    ids = question_ids(tokenizer)
    logits = []
    for name in {CACHE_ARG, "past_key_values"}:
        prefix = block_prefix(model, [block])
        with torch.no_grad():
            logits.append(model(ids, **{name: prefix.cache}, **prefix.forward_inputs(torch.ones_like(ids))).logits)
    reference = model(input_ids=ids, memory_blocks=[block]).logits
    assert all(torch.allclose(x, reference, atol=1e-6) for x in logits)


@pytest.mark.skipif(CACHE_ARG == "past_key_values", reason="one name before transformers 5.24")
def test_forward_refuses_the_cache_under_both_names(tokenizer):
    model = tiny_lychee()
    prefix = block_prefix(model, [model.compress(document_ids(tokenizer, 64)).block(0)])
    with pytest.raises(ValueError, match="Pass the cache once"):
        model(question_ids(tokenizer), cache=prefix.cache, past_key_values=prefix.cache)


def test_cache_kwargs_use_the_name_generate_passes():
    import inspect

    from transformers import GenerationMixin

    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    assert list(cache_kwargs(None)) == [CACHE_ARG] and CACHE_ARG in parameters


def test_importing_the_model_code_under_an_untested_release_warns_once():
    script = (
        "import warnings; warnings.simplefilter('always'); import transformers; "
        "transformers.__version__ = '5.99.0'; import lychee_hf.modeling, lychee_hf.modeling.compat_lychee"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("transformers 5.99.0 is installed") == 1, result.stderr
