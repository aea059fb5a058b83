"""The settings of end-to-end GRPO (`LycheeGRPOConfig`, a `TrainingArguments`).

The objective and the config names follow TRL's `GRPOConfig` (`num_generations`, `beta`, `epsilon`,
`epsilon_high`, `loss_type`, `scale_rewards`, `temperature`, `max_completion_length`); rollouts are in
`rollout.py`, rewards in `rewards.py`, the loss in `rl_loss.py` and the trainer in `rl_trainer.py`.
"""

from dataclasses import dataclass, field

from ..metrics import exact_match, substring_match, token_f1
from .trainer_utils import LycheeTrainingArguments, training_default

REWARDS = {"sub_em": substring_match, "em": exact_match, "f1": token_f1}
LOSS_TYPES = ("dapo", "grpo")
REWARD_SCALINGS = ("group", "batch", "none")


@dataclass
class LycheeGRPOConfig(LycheeTrainingArguments):
    """`TrainingArguments` for end-to-end GRPO, with TRL's `GRPOConfig` names where they mean the same. The `reasoner`
    LoRA adapter created when the model has none is configured apart, as in TRL: `train_rl(..., peft_config=...)`.

    Args:
        num_generations (`int`, *optional*, defaults to 4): episodes sampled per question (the group).
        per_device_train_batch_size (`int`, *optional*, defaults to 4): episodes per device and step, a multiple
            of `num_generations` (as in TRL: 8 with 4 generations = 2 questions).
        temperature / top_p / top_k: sampling of every turn (`top_k=0`: off). The loss scores log-softmax of
            logits / temperature, so keep `top_p=1` and `top_k=0` for an exact on-policy objective.
        max_completion_length (`int`, *optional*): tokens per memory update (default: the model's `memory_budget`).
        max_answer_length (`int`, *optional*): tokens of the final answer (default: `max_answer_tokens`).
        beta (`float`, *optional*, defaults to 0.0): KL coefficient against the reference: the backbone without
            the reasoner adapter reading the same blocks (k3 estimator). 0 (TRL's and DAPO's default) loads no
            reference pass.
        epsilon / epsilon_high (`float`, *optional*, defaults to 0.2 / 0.28): the ratio is clipped to
            [1 - epsilon, 1 + epsilon_high] (DAPO's clip-higher; set both to 0.2 for GRPO's symmetric clip).
        loss_type (`str`, *optional*, defaults to `"dapo"`): `"dapo"` averages over every completion token of the
            batch; `"grpo"` averages per episode first, then over episodes.
        scale_rewards (`str`, *optional*, defaults to `"group"`): divide advantages by the group's reward std
            (`"group"`), the batch's (`"batch"`) or not at all (`"none"`, Dr. GRPO).
        reward (`str`, *optional*, defaults to `"sub_em"`): answer reward, `"sub_em"`, `"em"` or `"f1"`.
        format_reward (`float`, *optional*, defaults to 0.0): added when the answer stops by itself (eos within
            `max_answer_length`) and is non-empty.
        train_compressor (`bool`, *optional*, defaults to `True`): also train the memory-token embedding and
            projections (and a `compressor` adapter if the model has one), through the blocks.
        logprob_batch_size (`int`, *optional*, defaults to 8): turns per teacher-forced forward.
    """

    num_generations: int = field(default=4, metadata={"help": "episodes per question (the group)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of episodes"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of episodes (1: off, exact on-policy)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling of episodes (0: off, exact on-policy)"})
    max_completion_length: int | None = field(
        default=None, metadata={"help": "tokens per memory update (None: the model's memory budget)"}
    )
    max_answer_length: int | None = field(
        default=None, metadata={"help": "tokens of the final answer (None: the model's max_answer_tokens)"}
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient against the adapter-free reference"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clip of the ratio: 1 - epsilon"})
    epsilon_high: float = field(default=0.28, metadata={"help": "upper clip of the ratio: 1 + epsilon_high"})
    loss_type: str = field(
        default="dapo", metadata={"help": "token averaging over the batch (dapo) or per episode", "choices": LOSS_TYPES}
    )
    scale_rewards: str = field(
        default="group", metadata={"help": "divide advantages by this reward std", "choices": REWARD_SCALINGS}
    )
    reward: str = field(default="sub_em", metadata={"help": "answer reward", "choices": list(REWARDS)})
    format_reward: float = field(default=0.0, metadata={"help": "bonus for a non-empty answer that stops"})
    train_compressor: bool = field(
        default=True, metadata={"help": "also train the memory-token weights, through the blocks"}
    )
    logprob_batch_size: int = field(default=8, metadata={"help": "turns per teacher-forced forward"})
    learning_rate: float = training_default("learning_rate", 1e-5)
    num_train_epochs: float = training_default("num_train_epochs", 1.0, aliases=["--epochs"])
    per_device_train_batch_size: int = training_default("per_device_train_batch_size", 4)
    max_grad_norm: float = training_default("max_grad_norm", 1.0)
    logging_steps: float = training_default("logging_steps", 1)

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 (advantages compare a group), got {self.num_generations}."
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) counts episodes and must be a "
                f"multiple of num_generations ({self.num_generations}): e.g. {self.num_generations} for one "
                "question per step."
            )
        for name, value, allowed in (
            ("loss_type", self.loss_type, LOSS_TYPES),
            ("scale_rewards", self.scale_rewards, REWARD_SCALINGS),
            ("reward", self.reward, tuple(REWARDS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive for sampling, got {self.temperature}.")
        if not 0 <= self.epsilon < 1 or self.epsilon_high < 0:
            raise ValueError(
                f"epsilon must be in [0, 1) and epsilon_high >= 0, got {self.epsilon}, {self.epsilon_high}."
            )

    @property
    def questions_per_device(self) -> int:
        return self.per_device_train_batch_size // self.num_generations
