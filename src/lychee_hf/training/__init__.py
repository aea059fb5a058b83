"""Training: the gate classifier (`gate.py`), reasoner fine-tuning rows (`reasoner.py`) and compressor
pretraining (`compressor.py`), on `transformers.Trainer`."""

from .compressor import CompressorPretrainingConfig, CompressorTrainer, pretrain_compressor
from .gate import GateTrainer, GateTrainingConfig, GateTrainingResult, build_gate_rows, train_gate

__all__ = [
    "CompressorPretrainingConfig",
    "CompressorTrainer",
    "GateTrainer",
    "GateTrainingConfig",
    "GateTrainingResult",
    "build_gate_rows",
    "pretrain_compressor",
    "train_gate",
]
