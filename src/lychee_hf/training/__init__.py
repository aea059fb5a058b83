"""Training, all on `transformers.Trainer`:

* the gate classifier (`gate.py`);
* reasoner fine-tuning rows (`reasoner.py`, the gold-fact teacher in `teacher.py`), and the span choice of the
  final answer copied from the evidence (`span_choice.py`);
* compressor pretraining (`compressor.py`, rows in `compressor_rows.py`, the KL to lossless reading in
  `distillation.py`);
* end-to-end GRPO of reasoner + compressor: settings (`rl_config.py`), episodes (`rollout.py`), their rewards
  (`rewards.py`), the loss (`rl_loss.py`) and the trainer (`rl_trainer.py`), on rows from `curriculum.py`;
* what the trainers share (`trainer_utils.py`): `TrainingArguments` defaults, role adapters and their weights,
  FSDP2 / DDP plumbing, resuming and the time limit.
"""

from .compressor import CompressorPretrainingConfig, CompressorTrainer, pretrain_compressor, reading_rows
from .curriculum import check_disjoint_seeds, check_trainable, curriculum_examples
from .gate import GateTrainer, GateTrainingConfig, GateTrainingResult, build_gate_rows, train_gate
from .rl_config import LycheeGRPOConfig
from .rl_trainer import LycheeGRPOTrainer, RLResult, train_rl
from .span_choice import SpanChoiceTrainer, build_span_choice_rows, train_span_choice
from .trainer_utils import LoraArguments, TimeLimitCallback

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
    "SpanChoiceTrainer",
    "TimeLimitCallback",
    "build_gate_rows",
    "build_span_choice_rows",
    "check_disjoint_seeds",
    "check_trainable",
    "curriculum_examples",
    "pretrain_compressor",
    "reading_rows",
    "train_gate",
    "train_rl",
    "train_span_choice",
]
