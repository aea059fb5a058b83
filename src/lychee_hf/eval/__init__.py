"""Offline evaluation: task generators, loaders, metrics, baselines and the runner."""
