"""Training: the gate classifier (`gate.py`), reasoner fine-tuning rows (`reasoner.py`), compressor pretraining
(`compressor.py`, rows in `compressor_rows.py`, the KL to lossless reading in `distillation.py`) and end-to-end
GRPO of reasoner + compressor (`rl.py`, rows from `curriculum.py`), all on `transformers.Trainer`."""

from .compressor import CompressorPretrainingConfig, CompressorTrainer, pretrain_compressor, reading_rows
from .curriculum import check_disjoint_seeds, check_trainable, curriculum_examples
from .data import LoraArguments, TimeLimitCallback
from .gate import GateTrainer, GateTrainingConfig, GateTrainingResult, build_gate_rows, train_gate
from .rl import LycheeGRPOConfig, LycheeGRPOTrainer, RLResult, train_rl

__all__ = [
    "CompressorPretrainingConfig",
    "CompressorTrainer",
    "GateTrainer",
    "GateTrainingConfig",
    "GateTrainingResult",
    "LoraArguments",
    "LycheeGRPOConfig",
    "LycheeGRPOTrainer",
    "RLResult",
    "TimeLimitCallback",
    "build_gate_rows",
    "check_disjoint_seeds",
    "check_trainable",
    "curriculum_examples",
    "pretrain_compressor",
    "reading_rows",
    "train_gate",
    "train_rl",
]
