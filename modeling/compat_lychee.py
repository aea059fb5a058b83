"""The one place where the supported transformers releases differ, and the check of the installed release.

transformers 5.24 renamed the cache argument `past_key_values` to `cache` (in `generate`,
`prepare_inputs_for_generation`, the models' and decoder layers' `forward`, and model outputs); 5.23 and earlier
use `past_key_values`. Everything else this model uses is the same in the tested range. The rest of `modeling/`
passes and reads the cache through the helpers below, so a release that moves again changes this file only.

The tested range is declared in `pyproject.toml` too (a test keeps the two equal).
"""

import inspect
import warnings

import transformers
from packaging.version import Version
from transformers import GenerationMixin

# [lowest tested, first untested): CI runs the lowest end, the newest release inside, and a canary beyond.
TESTED_TRANSFORMERS = ("5.23.0", "5.26")
# Releases this code knows it cannot run on: 4.x has no `GenerationMixin` split from `PreTrainedModel`,
# no `DynamicCache(ddp_cache_data=...)` and another config API.
OLDEST_POSSIBLE_TRANSFORMERS = "5.0.0"

LEGACY_CACHE_ARG = "past_key_values"
# The name under which `generate`, the models and their decoder layers pass the cache in this release.
_GENERATION_ARGS = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
CACHE_ARG = "cache" if "cache" in _GENERATION_ARGS else LEGACY_CACHE_ARG


def cache_kwargs(cache) -> dict:
    """`{name: cache}` under the installed release's name, for `generate` / `forward` / backbone calls."""
    return {CACHE_ARG: cache}


def pop_cache(kwargs: dict, cache=None):
    """The cache a call received under either name (removed from `kwargs`); both at once is an error.

    Under 5.24+ `generate` and the decoder layers pass `cache`; under 5.23, and from code written for it,
    `past_key_values`. A `forward` that takes both stays callable both ways.
    """
    legacy = kwargs.pop(LEGACY_CACHE_ARG, None)
    if CACHE_ARG != LEGACY_CACHE_ARG:
        cache = kwargs.pop(CACHE_ARG, cache)
    if cache is not None and legacy is not None:
        raise ValueError(f"Pass the cache once: got both `{CACHE_ARG}` and `{LEGACY_CACHE_ARG}`.")
    return cache if cache is not None else legacy


def output_cache(outputs):
    """The cache a model output holds (`outputs.cache` from 5.24, `outputs.past_key_values` before)."""
    return getattr(outputs, CACHE_ARG, None)


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Warns (once per import) when `installed` is outside the tested range; raises where it cannot work."""
    lowest, first_untested = (Version(v) for v in TESTED_TRANSFORMERS)
    version = Version(installed)
    tested = f">={TESTED_TRANSFORMERS[0]},<{TESTED_TRANSFORMERS[1]}"
    if version < Version(OLDEST_POSSIBLE_TRANSFORMERS):
        raise ImportError(
            f"LycheeMemory needs transformers {OLDEST_POSSIBLE_TRANSFORMERS} or newer (tested: {tested}); "
            f"transformers {installed} is installed: pip install 'transformers{tested}'."
        )
    if not lowest <= version < first_untested:
        warnings.warn(
            f"LycheeMemory is tested on transformers {tested}; transformers {installed} is installed. It may work; "
            f"if it misbehaves, pip install 'transformers{tested}' and report what broke.",
            UserWarning,
            stacklevel=2,
        )


check_transformers_version()
