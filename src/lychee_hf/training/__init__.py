"""Training: the gate classifier (`gate.py`)."""

from .gate import GateTrainer, GateTrainingConfig, GateTrainingResult, build_gate_rows, train_gate

__all__ = ["GateTrainer", "GateTrainingConfig", "GateTrainingResult", "build_gate_rows", "train_gate"]
