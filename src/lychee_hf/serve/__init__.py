"""The LycheeMemory service: documents compressed once into banks, questions answered over them by many users.

    lychee-hf serve --banks banks/ --api-keys keys.txt --host 0.0.0.0 --port 8000

    from lychee_hf.serve import create_app, ServeLimits
    app = create_app(model_path=None, banks_dir="banks/", api_keys={"a-long-random-key": "alice"})

A thin layer over the library: `app.py` (the ASGI app and its error handling), `routes_*.py` (the HTTP routes, no
model logic), `service.py` (what routes call), `store.py` (the document store: texts, banks, index), `compression.py`
(background, resumable compression), `scheduler.py` (questions batched into shared `generate` calls), `turns.py`
(the model's turns between the two), `keys.py` and `limits.py`, `middleware.py` (body bound, access log, metrics),
and `static/` (the web page). Needs the `serve` extra (`pip install "lychee-hf[serve]"`); this package imports it
only when `create_app` is used, so `limits.py` and `keys.py` stay light.
"""

from importlib import import_module

_NAMES = {"create_app": "app", "ServeLimits": "limits", "read_api_keys": "keys"}

__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value
