"""Offline evaluation: the methods compared (`baselines.py`), the resumable, sharded runner (`runner.py`) and its plots
(`plots.py`). Rows come from `lychee_hf.data`, scores from `lychee_hf.metrics`."""
