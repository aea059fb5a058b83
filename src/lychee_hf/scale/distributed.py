"""The accelerate state every scale-out path shares, and what the paths do with it.

One process, `accelerate launch` (GPUs, nodes) and `torchrun` run the same code: work is split with accelerate's
`split_between_processes`, results come back with `gather_object`, and the main process writes what is shared
after `wait_for_everyone`. On a machine without CUDA, `torchrun --nproc_per_node N` only gives N cooperating
processes when the state is created with `cpu=True` (accelerate picks `MULTI_CPU`, gloo, then); `accelerate
launch --cpu` itself starts one process there unless it goes through `mpirun`.
"""

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers.utils import logging


def distributed_state() -> PartialState:
    """The process's accelerate state: `PartialState(cpu=not torch.cuda.is_available())`.

    Under `accelerate launch --multi_gpu` (or a config from `accelerate config`) this is `MULTI_GPU` with one GPU
    per process; under `torchrun` on a CPU machine `MULTI_CPU` (gloo); alone, one process.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def place_model(model, state: PartialState):
    """Moves `model` to this process's device (its own GPU under `accelerate launch`), unless a device map or a
    quantized load already placed it."""
    if getattr(model, "hf_device_map", None) or getattr(model, "is_quantized", False):
        return model
    return model.to(state.device)


def gather_lists(state: PartialState, items: list) -> list:
    """Every process's `items`, concatenated in process order, on every process (`accelerate`'s `gather_object`)."""
    return gather_object(items) if state.num_processes > 1 else list(items)


def process_progress(state: PartialState, total: int, desc: str, unit: str, show: bool):
    """One progress bar per process, stacked by process index, labelled with it when there are several."""
    label = f"{desc} [{state.process_index}/{state.num_processes}]" if state.num_processes > 1 else desc
    return logging.tqdm(total=total, desc=label, unit=unit, position=state.process_index, disable=not show)


def end_distributed(wait: bool = True) -> None:
    """Closes the process group, if this process opened one.

    A gloo group left for the interpreter's exit to destroy can abort the process ("terminate called without an
    active exception") while its worker threads are still joinable; closing it explicitly ends the run cleanly.

    Args:
        wait (`bool`): first wait for every process to get here (after a command that succeeded); `False` after an
            error, where the other processes may never arrive.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    if wait:
        distributed_state().wait_for_everyone()
    torch.distributed.destroy_process_group()
