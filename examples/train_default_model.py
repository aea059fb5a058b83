"""Rebuild the embedded default's shipped weights: compressor pretraining, then end-to-end GRPO, then export.

    python examples/train_default_model.py --out weights/                # ~1 h on 2 CPU cores
    python examples/train_default_model.py --out weights/ --rl-minutes 240 --rl-n 200   # a longer run

The same three steps as the CLI (`lychee-hf pretrain-compressor`, `lychee-hf train-rl`), with the settings that
made `lychee_hf/default_weights/` (recorded in its `training.json`):

1. the untrained default (`ensure_default_model(trained=False)`: SmolLM2-135M, rank-8 memory projections) reads
   at ratio 4 and its memory tokens learn the continuation loss on CPython's bundled docs;
2. GRPO on the lossless default (the mode the default ships in) trains a new `reasoner` LoRA adapter on a
   niah + mhqa curriculum (512 then 1K tokens, generator seeds 1000-1001, disjoint from evaluation's 0);
3. both are written as the package ships them (fp16, a few MB) into `--out`; copy that folder over
   `src/lychee_hf/default_weights/` to change the default (its cache folder name follows the weights).
"""

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.default_model import ensure_default_model, export_shipped_weights
from lychee_hf.training.compressor import CompressorPretrainingConfig, pretrain_compressor
from lychee_hf.training.curriculum import curriculum_examples
from lychee_hf.training.data import TimeLimitCallback
from lychee_hf.training.rl import LycheeGRPOConfig, train_rl


def pretrain(path: Path, tokenizer, work: Path, rows: int) -> tuple[dict, dict]:
    model = LycheeMemoryForCausalLM.from_pretrained(path, compression_mode="memory_tokens", compression_ratio=4)
    config = CompressorPretrainingConfig(
        output_dir=str(work / "pretrain"),
        continuation_tokens=128,
        learning_rate=2e-3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        max_train_rows=rows,
        max_eval_rows=16,
        logging_steps=8,
        seed=0,
    )
    started = time.perf_counter()
    result = pretrain_compressor(model, tokenizer, config)
    record = {
        "rows": result.train_rows,
        "eval_rows": result.eval_rows,
        "seconds": round(time.perf_counter() - started),
        "held_out_before": result.before,
        "held_out_after": result.after,
    }
    return model.compressor.state_dict(), record


def reinforce(path: Path, tokenizer, work: Path, n: int, minutes: float) -> tuple[LycheeMemoryForCausalLM, dict]:
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    examples = curriculum_examples(tokenizer, ["niah", "mhqa"], [512, 1000], n, seed=1000)
    config = LycheeGRPOConfig(
        output_dir=str(work / "rl"),
        num_generations=4,
        per_device_train_batch_size=4,
        learning_rate=5e-5,
        temperature=0.7,
        seed=1000,
    )
    started = time.perf_counter()
    result = train_rl(model, tokenizer, examples, config, callbacks=[TimeLimitCallback(minutes)])
    log = [entry for entry in result.trainer.state.log_history if "reward" in entry]
    record = {
        "questions_seen": len(log) * config.questions_per_device,
        "steps": len(log),
        "seconds": round(time.perf_counter() - started),
        "settings": {key: getattr(config, key) for key in ("num_generations", "learning_rate", "temperature", "beta")},
        "curriculum": {"tasks": ["niah", "mhqa"], "lengths": [512, 1000], "n": n, "seed": 1000},
        "mean_reward_first_20_steps": sum(e["reward"] for e in log[:20]) / max(len(log[:20]), 1),
        "mean_reward_last_20_steps": sum(e["reward"] for e in log[-20:]) / max(len(log[-20:]), 1),
    }
    return model, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="new folder for the weights")
    parser.add_argument("--work", default="train-default-work", help="scratch folder for trainer outputs")
    parser.add_argument("--pretrain-rows", type=int, default=96, help="compressor pretraining windows")
    parser.add_argument("--rl-n", type=int, default=60, help="examples per task and curriculum stage")
    parser.add_argument("--rl-minutes", type=float, default=40.0, help="wall-time budget of the RL run")
    args = parser.parse_args()
    out, work = Path(args.out), Path(args.work)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder")
    torch.manual_seed(0)
    path = ensure_default_model(trained=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    compressor_state, pretraining = pretrain(path, tokenizer, work, args.pretrain_rows)
    model, rl = reinforce(path, tokenizer, work, args.rl_n, args.rl_minutes)
    model.compressor.load_state_dict(compressor_state)  # lossless RL never reads the compressor: no conflict
    provenance = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "compressor_pretraining": pretraining,
        "rl": rl,
    }
    for path in export_shipped_weights(model, out, provenance):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
