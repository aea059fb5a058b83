"""What the trainers share: a map-style dataset over in-memory rows, and the `TrainingArguments` defaults."""

import time
from dataclasses import dataclass

from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments


@dataclass
class LycheeTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults every lychee-hf trainer wants: rows are not model-forward dicts
    (keep every column), nothing is reported to an outside service, and no checkpoints unless asked for."""

    remove_unused_columns: bool = False
    report_to: str | list[str] | None = "none"
    logging_steps: int = 10
    save_strategy: str = "no"


class ListDataset(Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index]


class TimeLimitCallback(TrainerCallback):
    """Ends training cleanly (the model keeps every step taken) once `minutes` of wall time have passed."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.started >= self.seconds:
            control.should_training_stop = True
