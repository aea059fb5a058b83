"""Two training steps of each trainer (gate, compressor pretraining, GRPO) on tiny models, for the multi-process
tests: `torchrun --nproc_per_node P tests/dist_train_step.py --out DIR --global-batch B` (B divisible by P).

Every process writes `DIR/<trainer>-rank<r>.safetensors` (its trainable weights after the steps) and
`DIR/<trainer>-rank<r>.json` (how it ran: distributed type, processes, initial weights' file, logged losses).
Plain SGD, no clipping: the update is proportional to the gradient, so a wrong reduction shows.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from lychee_hf.data import make_niah
from lychee_hf.scale.distributed import end_distributed
from lychee_hf.testing import CORPUS, tiny_lychee, tiny_tokenizer
from lychee_hf.training.compressor import CompressorPretrainingConfig, CompressorTrainer, continuation_rows
from lychee_hf.training.curriculum import curriculum_examples
from lychee_hf.training.gate import GateTrainer, GateTrainingConfig, build_gate_rows
from lychee_hf.training.rl_config import LycheeGRPOConfig
from lychee_hf.training.rl_trainer import LycheeGRPOTrainer, prepare_for_rl
from lychee_hf.training.trainer_utils import ListDataset, LoraArguments, add_role_lora, train_only

SMALL = dict(chunk_size=32, compression_window=32, memory_budget=4, max_answer_tokens=4)
COMMON = dict(
    max_steps=2,
    optim="sgd",
    max_grad_norm=0.0,
    lr_scheduler_type="constant",
    logging_steps=1,
    disable_tqdm=True,
    seed=0,
)


def trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def gate_trainer(tokenizer, out: Path, per_device: int, **overrides):
    model = tiny_lychee(gate_type="classifier", **SMALL)
    model.set_gate("classifier", tokenizer)
    add_role_lora(model, "gate", LoraArguments(lora_r=4).lora_config())
    train_only(model, ["gate"])
    rows = build_gate_rows(model, tokenizer, make_niah(tokenizer, 160, 4, seed=5))
    settings = {**COMMON, "learning_rate": 0.5, **overrides}
    config = GateTrainingConfig(output_dir=str(out / "gate"), per_device_train_batch_size=per_device, **settings)
    return model, GateTrainer(model=model, args=config, train_dataset=ListDataset(rows), positive_weight=2.0)


def compressor_trainer(tokenizer, out: Path, per_device: int):
    model = tiny_lychee(compression_mode="memory_tokens", **SMALL)
    train_only(model, ["compressor"])
    rows = continuation_rows(tokenizer, " ".join(CORPUS * 6), 32, 8)
    config = CompressorPretrainingConfig(
        output_dir=str(out / "compressor"),
        continuation_tokens=8,
        per_device_train_batch_size=per_device,
        **{**COMMON, "learning_rate": 0.5},
    )
    return model, CompressorTrainer(model=model, args=config, train_dataset=ListDataset(rows))


def grpo_trainer(tokenizer, out: Path, per_device: int):
    model = tiny_lychee(compression_mode="memory_tokens", gate_type="always_related", **SMALL)
    config = LycheeGRPOConfig(
        output_dir=str(out / "grpo"),
        num_generations=2,
        per_device_train_batch_size=2 * per_device,
        **{**COMMON, "learning_rate": 0.5},
    )
    prepare_for_rl(model, config, LoraArguments(lora_r=4).lora_config())
    examples = curriculum_examples(tokenizer, ["niah"], [90], 8)
    reward = [lambda completions, **kwargs: [len(text) / 10 for text in completions]]  # spread in every group
    return model, LycheeGRPOTrainer(model, config, ListDataset(examples), tokenizer, reward)


TRAINERS = {"gate": gate_trainer, "compressor": compressor_trainer, "grpo": grpo_trainer}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--global-batch", type=int, default=4, help="rows (gate/compressor) or questions (GRPO)")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    for name in args.trainers.split(","):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        model, trainer = TRAINERS[name](tokenizer, out, args.global_batch // world)
        rank, state = trainer.accelerator.process_index, trainer.accelerator.state
        initial = trainable(model)
        trainer.train()
        save_file(trainable(model), out / f"{name}-rank{rank}.safetensors")
        if rank == 0:
            save_file(initial, out / f"{name}-initial.safetensors")
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        record = {
            "distributed_type": str(state.distributed_type),
            "num_processes": state.num_processes,
            "steps": trainer.state.global_step,
            "losses": losses,
            "log": trainer.state.log_history,
        }
        (out / f"{name}-rank{rank}.json").write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
    end_distributed()
