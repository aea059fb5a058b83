"""Rebuild the embedded default's shipped weights: compressor pretraining, teacher SFT of the reasoner on the
training fact families, end-to-end GRPO, then export. Resumable: stop it at any time (or give `--max-minutes`)
and rerun the same command with `--resume`; the result equals one uninterrupted run.

    python examples/train_default_model.py --out weights/ --work train-default-work            # hours on 2 CPU cores
    python examples/train_default_model.py --out weights/ --work train-default-work --resume   # continue

The stages (each writes `WORK/<stage>/result.json` when done; a resumed run skips finished stages and continues an
unfinished one from its last checkpoint, written every `--save-steps` optimizer steps):

1. `pretrain`: the untrained default (`ensure_default_model(trained=False)`: SmolLM2-135M, rank-8 memory
   projections) reads at ratio 4 and its memory tokens learn the continuation loss on CPython's bundled docs;
2. `sft`: a fresh `reasoner` LoRA adapter learns the gold-fact teacher's steps (each block's memory update, then
   the final answer) on the *training* fact families and two-hop chains in their training phrasings, plus needle
   and multi-hop rows, at 512 and 1K tokens (generator seeds 1000-1001, disjoint from evaluation's 0). Steps that
   write nothing new are kept at `--sft-unchanged-fraction` only (see `lychee_hf.training.reasoner`);
3. `rl`: GRPO from the SFT adapter at 1K tokens on `--rl-tasks` (training families and needles only: the
   held-out tasks are refused), `--rl-n` questions each (`--rl-steps 0` skips it);
4. both are written as the package ships them (fp16, a few MB) into `--out`, with `training.json` recording every
   stage's settings and every invocation (`WORK/runs.json`). Copy that folder over `src/lychee_hf/default_weights/`
   to change the default (its cache folder name follows the weights). Held-out families are never trained on:
   evaluate them with `lychee-hf eval --tasks facts-heldout,twohop-heldout`.
"""

import argparse
import json
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.default_model import ensure_default_model, export_shipped_weights
from lychee_hf.modeling.adapters_lychee import load_role_adapter, save_role_adapter
from lychee_hf.training.compressor import CompressorPretrainingConfig, pretrain_compressor
from lychee_hf.training.curriculum import check_trainable, curriculum_examples
from lychee_hf.training.reasoner import train_reasoner_sft
from lychee_hf.training.rl_config import LycheeGRPOConfig
from lychee_hf.training.rl_trainer import train_rl
from lychee_hf.training.trainer_utils import LycheeTrainingArguments, TimeLimitCallback

SEED = 1000
SFT_LENGTHS = [512, 1000]


class OutOfTime(Exception):
    """`--max-minutes` ran out inside a stage; its last checkpoint is saved and `--resume` continues it."""


def stage_done(work: Path, stage: str) -> dict | None:
    path = work / stage / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def finish_stage(work: Path, stage: str, record: dict) -> None:
    (work / stage / "result.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def checkpoints_in(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("checkpoint-*"))


def time_left(deadline: float | None) -> float | None:
    """Minutes left before `--max-minutes` runs out (`None`: no limit)."""
    return None if deadline is None else max((deadline - time.monotonic()) / 60, 0.0)


def run_trainer_stage(stage: str, trainer_dir: Path, max_steps: int, deadline: float | None, resume: bool, fit):
    """Runs `fit(callbacks, resume_from_checkpoint)`; raises `OutOfTime` when the time limit stopped it early."""
    minutes = time_left(deadline)
    callbacks = [] if minutes is None else [TimeLimitCallback(minutes)]
    trainer = fit(callbacks, resume and checkpoints_in(trainer_dir))
    if trainer.state.global_step < max_steps:
        raise OutOfTime(f"{stage} stopped at step {trainer.state.global_step} of {max_steps}")
    return trainer


def pretrain(path: Path, tokenizer, work: Path, args, deadline, resume) -> dict:
    model = LycheeMemoryForCausalLM.from_pretrained(path, compression_mode="memory_tokens", compression_ratio=4)
    config = CompressorPretrainingConfig(
        output_dir=str(work / "pretrain" / "trainer"),
        continuation_tokens=128,
        learning_rate=2e-3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        max_train_rows=args.pretrain_rows,
        max_eval_rows=16,
        logging_steps=8,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        seed=0,
    )
    steps = args.pretrain_rows // config.per_device_train_batch_size
    started = time.perf_counter()
    results = []

    def fit(callbacks, resume_from):
        result = pretrain_compressor(
            model, tokenizer, config, resume_from_checkpoint=resume_from or None, callbacks=callbacks
        )
        results.append(result)
        return result.trainer

    run_trainer_stage("pretrain", Path(config.output_dir), steps, deadline, resume, fit)
    result = results[-1]
    save_file(
        {k: t.contiguous() for k, t in model.compressor.state_dict().items()},
        work / "pretrain" / "compressor.safetensors",
    )
    return {
        "objective": "continuation loss, 128 tokens, CPython docs (pydoc_data)",
        "ratio": 4,
        "rows": result.train_rows,
        "eval_rows": result.eval_rows,
        "steps": result.trainer.state.global_step,
        "learning_rate": config.learning_rate,
        "seconds_last_invocation": round(time.perf_counter() - started),
        "held_out_before": result.before,
        "held_out_after": result.after,
    }


def checkpointing(args) -> dict:
    """What the SFT and RL stages' trainers share: resumable checkpoints (the last one kept), the seed, no bars."""
    return {
        "save_strategy": "steps",
        "save_steps": args.save_steps,
        "save_total_limit": 1,
        "seed": SEED,
        "disable_tqdm": True,
    }


def sft_examples(tokenizer, args) -> list:
    families = curriculum_examples(tokenizer, ["facts"], SFT_LENGTHS, args.sft_facts, seed=SEED)
    chains = curriculum_examples(tokenizer, ["twohop"], SFT_LENGTHS, args.sft_twohop, seed=SEED)
    synthetic = curriculum_examples(tokenizer, ["niah", "mhqa"], SFT_LENGTHS, args.sft_synthetic, seed=SEED)
    return families + chains + synthetic


def sft(path: Path, tokenizer, work: Path, args, deadline, resume) -> dict:
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    examples = sft_examples(tokenizer, args)
    training_args = LycheeTrainingArguments(
        output_dir=str(work / "sft" / "trainer"),
        max_steps=args.sft_steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=8,
        learning_rate=args.sft_learning_rate,
        warmup_steps=10,
        logging_steps=10,
        **checkpointing(args),
    )
    started = time.perf_counter()

    def fit(callbacks, resume_from):
        return train_reasoner_sft(
            model, tokenizer, examples, training_args, args.sft_unchanged_fraction, callbacks=callbacks,
            resume_from_checkpoint=resume_from or None,
        )  # fmt: skip

    trainer = run_trainer_stage("sft", Path(training_args.output_dir), args.sft_steps, deadline, resume, fit)
    save_role_adapter(model, "reasoner", work / "sft" / "reasoner")
    log = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "objective": "gold-fact teacher: each block's memory update, then the final answer (cross-entropy)",
        "rows": {"facts": 2 * args.sft_facts, "twohop": 2 * args.sft_twohop, "niah": 2 * args.sft_synthetic,
                 "mhqa": 2 * args.sft_synthetic, "lengths": SFT_LENGTHS, "seeds": [SEED, SEED + 1]},
        "teacher_steps": len(trainer.train_dataset),
        "unchanged_fraction": args.sft_unchanged_fraction,
        "optimizer_steps": trainer.state.global_step,
        "batch": training_args.gradient_accumulation_steps,
        "learning_rate": args.sft_learning_rate,
        "lora": "r=8, alpha=16, every decoder projection",
        "loss_first_logged": log[0]["loss"] if log else None,
        "loss_last_logged": log[-1]["loss"] if log else None,
        "seconds_last_invocation": round(time.perf_counter() - started),
    }  # fmt: skip


def rl(path: Path, tokenizer, work: Path, args, deadline, resume) -> dict:
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    load_role_adapter(model, work / "sft", "reasoner")
    tasks = args.rl_tasks.split(",")
    examples = curriculum_examples(tokenizer, tasks, [1000], args.rl_n, seed=SEED + len(SFT_LENGTHS))
    config = LycheeGRPOConfig(
        output_dir=str(work / "rl" / "trainer"),
        max_steps=args.rl_steps,
        num_generations=4,
        per_device_train_batch_size=4,
        learning_rate=args.rl_learning_rate,
        temperature=0.7,
        **checkpointing(args),
    )
    started = time.perf_counter()

    def fit(callbacks, resume_from):
        return train_rl(
            model, tokenizer, examples, config, callbacks=callbacks, resume_from_checkpoint=resume_from or None
        ).trainer

    trainer = run_trainer_stage("rl", Path(config.output_dir), args.rl_steps, deadline, resume, fit)
    save_role_adapter(model, "reasoner", work / "rl" / "reasoner")
    log = [entry for entry in trainer.state.log_history if "reward" in entry]
    return {
        "algorithm": "GRPO (dapo loss, group-scaled advantages, num_iterations 1, beta 0), from the SFT adapter",
        "mode": "lossless blocks (the mode the default ships in)",
        "tasks": tasks,
        "length": 1000,
        "n": args.rl_n,
        "seed": SEED + len(SFT_LENGTHS),
        "steps": trainer.state.global_step,
        "settings": {key: getattr(config, key) for key in ("num_generations", "learning_rate", "temperature", "beta")},
        "mean_reward_first_20_steps": sum(e["reward"] for e in log[:20]) / max(len(log[:20]), 1),
        "mean_reward_last_20_steps": sum(e["reward"] for e in log[-20:]) / max(len(log[-20:]), 1),
        "seconds_last_invocation": round(time.perf_counter() - started),
    }


def record_invocation(work: Path, entry: dict) -> list[dict]:
    path = work / "runs.json"
    runs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    runs.append(entry)
    path.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return runs


def export(path: Path, work: Path, out: Path, args, results: dict, runs: list[dict]) -> None:
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    state = load_file(work / "pretrain" / "compressor.safetensors")
    model.compressor.load_state_dict(state)  # lossless reading never uses the compressor: no conflict with RL
    load_role_adapter(model, work / ("rl" if args.rl_steps else "sft"), "reasoner")
    provenance = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "reproduce": "python examples/train_default_model.py --out weights/ " + " ".join(stage_arguments(args)),
        "compressor_pretraining": results["pretrain"],
        "reasoner_sft": results["sft"],
        "rl": results.get("rl", "skipped (--rl-steps 0)"),
        "invocations": runs,
    }
    for written in export_shipped_weights(model, out, provenance):
        print(f"wrote {written} ({written.stat().st_size / 2**20:.2f} MiB)")


def stage_arguments(args) -> list[str]:
    names = ["pretrain_rows", "sft_facts", "sft_twohop", "sft_synthetic", "sft_steps", "sft_learning_rate",
             "sft_unchanged_fraction", "rl_tasks", "rl_n", "rl_steps", "rl_learning_rate"]  # fmt: skip
    return [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in names]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="new folder for the weights")
    parser.add_argument("--work", default="train-default-work", help="folder for stage results and checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue the run in --work (same settings)")
    parser.add_argument("--max-minutes", type=float, help="stop at a checkpoint after this long (then --resume)")
    parser.add_argument("--save-steps", type=int, default=25, help="optimizer steps between checkpoints")
    parser.add_argument("--pretrain-rows", type=int, default=96, help="compressor pretraining windows")
    parser.add_argument("--sft-facts", type=int, default=600, help="training-family rows per SFT length")
    parser.add_argument("--sft-twohop", type=int, default=300, help="two-hop rows per SFT length")
    parser.add_argument("--sft-synthetic", type=int, default=100, help="niah and mhqa rows each per SFT length")
    parser.add_argument("--sft-steps", type=int, default=500, help="SFT optimizer steps (8 teacher steps each)")
    parser.add_argument("--sft-learning-rate", type=float, default=2e-4)
    parser.add_argument("--sft-unchanged-fraction", type=float, default=0.1, help="share of no-new-fact steps kept")
    parser.add_argument("--rl-tasks", default="facts,twohop,niah", help="GRPO tasks, comma-separated")
    parser.add_argument("--rl-n", type=int, default=40, help="GRPO examples per task")
    parser.add_argument("--rl-steps", type=int, default=100, help="GRPO steps (0: no RL stage)")
    parser.add_argument("--rl-learning-rate", type=float, default=5e-5)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    try:
        check_trainable(args.rl_tasks.split(","))
    except ValueError as error:
        raise SystemExit(f"--rl-tasks: {error}") from None
    out, work = Path(args.out), Path(args.work)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder")
    settings_file = work / "settings.json"
    settings = stage_arguments(args)
    if work.exists() and any(work.iterdir()):
        if not args.resume:
            raise SystemExit(f"{work} holds an earlier run: add --resume to continue it, or choose a new --work")
        if settings_file.is_file() and json.loads(settings_file.read_text(encoding="utf-8")) != settings:
            raise SystemExit(f"{work} was started with other settings ({settings_file}): resume with the same ones")
    work.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings) + "\n", encoding="utf-8")
    deadline = None if args.max_minutes is None else time.monotonic() + args.max_minutes * 60
    torch.manual_seed(0)
    path = ensure_default_model(trained=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    stages = {"pretrain": pretrain, "sft": sft, "rl": rl} if args.rl_steps else {"pretrain": pretrain, "sft": sft}
    invocation = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stages": {}}
    results = {}
    try:
        for stage, run in stages.items():
            results[stage] = stage_done(work, stage)
            if results[stage] is None:
                (work / stage).mkdir(exist_ok=True)
                began = time.perf_counter()
                try:
                    results[stage] = run(path, tokenizer, work, args, deadline, args.resume)
                finally:
                    invocation["stages"][stage] = round(time.perf_counter() - began)
                finish_stage(work, stage, results[stage])
                # The stage's result is written; its trainer checkpoints only served to resume it (0.5 GB).
                shutil.rmtree(work / stage / "trainer", ignore_errors=True)
                print(f"{stage}: done", flush=True)
    except OutOfTime as stop:
        invocation["stopped"] = str(stop)
        record_invocation(work, invocation)
        raise SystemExit(f"{stop}: the checkpoint is saved; rerun with --resume to continue") from None
    invocation["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    runs = record_invocation(work, invocation)
    export(path, work, out, args, results, runs)


if __name__ == "__main__":
    main()
