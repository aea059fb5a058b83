"""One compressor-pretraining step under FSDP2, for the multi-process tests:
`torchrun --nproc_per_node P tests/dist_fsdp_step.py --out DIR`. (`--trainers grpo` runs a GRPO step the same
way; under FSDP2 it fails while sampling: FSDP2's forward refuses `torch.inference_mode`, which `compress` uses.)

With P > 1 every decoder layer and the root model are sharded with `fully_shard` (what accelerate's FSDP2 plugin
does on GPUs with TRANSFORMER_BASED_WRAP; accelerate engages FSDP on GPUs only, so on CPU the script shards
itself). With P = 1 nothing is sharded: the reference. The step is the trainer's own `compute_loss`, then backward
and plain SGD over the global batch split evenly across processes. Process 0 writes
`DIR/<trainer>.safetensors`: every trainable weight after the step, gathered whole.
"""

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from dist_train_step import compressor_trainer, grpo_trainer
from lychee_hf.testing import tiny_tokenizer


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


def step(name: str, out: Path, global_batch: int) -> None:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    per_device = global_batch // world
    build = {"compressor": compressor_trainer, "grpo": grpo_trainer}[name]
    model, trainer = build(tiny_tokenizer(), out, per_device)
    dataset = trainer.train_dataset
    if name == "compressor":
        rows = [dataset[i] for i in range(rank * per_device, (rank + 1) * per_device)]
        inputs = trainer.data_collator(rows)
    else:
        questions = trainer.args.questions_per_device
        inputs = [(i, dataset[i]) for i in range(rank * questions, (rank + 1) * questions)]
    if rank == 0:
        save_file(full_trainable(model), out / f"{name}-initial.safetensors")
    if world > 1:
        shard(model)
    model.train()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=trainer.args.learning_rate)
    optimizer.step()
    weights = full_trainable(model)
    if rank == 0:
        save_file(weights, out / f"{name}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--global-batch", type=int, default=4, help="rows (compressor) or questions (GRPO)")
    parser.add_argument("--trainers", default="compressor")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.trainers.split(","):
        step(name, out, args.global_batch)


if __name__ == "__main__":
    main()
