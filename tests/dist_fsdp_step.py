"""Training steps under FSDP2, for the multi-process tests: `torchrun --nproc_per_node P tests/dist_fsdp_step.py
--out DIR [--trainers compressor|grpo] [--steps N]` (default: one compressor-pretraining step).

With P > 1 every decoder layer and the root model are sharded with `fully_shard` (what accelerate's FSDP2 plugin
does on GPUs with TRANSFORMER_BASED_WRAP; accelerate engages FSDP on GPUs only, so on CPU the script shards
itself). With P = 1 nothing is sharded: the reference. A step is the trainer's own `training_step` (`compute_loss`,
then backward; GRPO's runs on weights gathered for the step and reduces the gradients once, see
`gathered_for_step`), then plain SGD over the global batch split evenly across processes. GRPO reads two short
documents then two long ones, so with P = 2 the processes sample and score different numbers of turns. Process 0
writes `DIR/<trainer>.safetensors`: every trainable weight after the steps, gathered whole (and
`<trainer>-initial.safetensors`, the weights before).
"""

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from dist_train_step import compressor_trainer, grpo_trainer
from lychee_hf.scale.distributed import end_distributed
from lychee_hf.testing import tiny_tokenizer
from lychee_hf.training.curriculum import curriculum_examples


def shard(model) -> None:
    """`fully_shard` per decoder layer, then the root (the compressor's weights and the embeddings are the root's)."""
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def full_trainable(model) -> dict[str, torch.Tensor]:
    weights = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            value = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
            weights[name] = value.detach().clone().contiguous()
    return weights


def step(name: str, out: Path, global_batch: int, steps: int) -> None:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    per_device = global_batch // world
    build = {"compressor": compressor_trainer, "grpo": grpo_trainer}[name]
    tokenizer = tiny_tokenizer()
    model, trainer = build(tokenizer, out, per_device)
    if name == "compressor":
        dataset = trainer.train_dataset
        rows = [dataset[i] for i in range(rank * per_device, (rank + 1) * per_device)]
        inputs = trainer.data_collator(rows)
    else:
        # Short documents first, long ones last: process 0 reads 2 chunks per document, process 1 reads 5, so the
        # processes sample different numbers of forward calls (the weights must stay gathered while sampling).
        examples = curriculum_examples(tokenizer, ["niah"], [60, 150], global_batch // 2)
        questions = trainer.args.questions_per_device
        inputs = [(i, examples[i]) for i in range(rank * questions, (rank + 1) * questions)]
    if rank == 0:
        save_file(full_trainable(model), out / f"{name}-initial.safetensors")
    if world > 1:
        shard(model)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=trainer.args.learning_rate)
    trainer.current_gradient_accumulation_steps = 1  # what `train` sets before each step
    for _ in range(steps):
        trainer.training_step(model, inputs)  # compute_loss, backward (GRPO: on gathered weights under FSDP2)
        optimizer.step()
        optimizer.zero_grad()
        trainer.state.global_step += 1  # GRPO: the next step samples new episodes (`rollout_seed`), as in `train`
    weights = full_trainable(model)
    if rank == 0:
        save_file(weights, out / f"{name}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--global-batch", type=int, default=4, help="rows (compressor) or questions (GRPO)")
    parser.add_argument("--trainers", default="compressor")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps on the same batch")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.trainers.split(","):
        step(name, out, args.global_batch, args.steps)


if __name__ == "__main__":
    main()
    end_distributed()
