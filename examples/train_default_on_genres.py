"""Continues the shipped default's `reasoner` adapter on the training genres (meeting minutes, manual pages, e-mail
threads, release notes), with training-family facts kept in the mix so what it learnt stays.

    python examples/train_default_on_genres.py --out genres-model/ --steps 100
    python examples/train_default_on_genres.py --out genres-model/ --steps 100 --resume   # after a stop
    python benchmarks/genres_check.py --model genres-model/ --lengths 2k --n 8             # then measure it
    python examples/train_default_on_genres.py --out genres-model/ --export weights/       # ship it if better

With `--objective teacher` (the default) the steps are the gold-fact teacher's (`lychee_hf.training.reasoner`):
each block's memory update, then the final answer, so the answer turn learns to give the value a genre's question
asks for (a number of days, an amount, a person), not a word of the question. With `--objective span-choice`
(`lychee_hf.training.span_choice`) each optimizer step is 8 gold sentences, and the final turn learns to prefer
the gold answer over the sentence's other names, numbers and codes, the choice `answer_from="evidence"` asks of
it; the memory updates share the adapter and drift (measured 2026-12-07: benchmarks/RESULTS.md, "Training the
default"). Held-out genres (contracts, reports, FAQs) never appear here. Checkpoints go
to `OUT/trainer` every `--save-steps` optimizer steps; `--resume` continues the last one with the same settings
(recorded in `OUT/settings.json`). The finished model is a full checkpoint folder in `OUT` (for `--model`), and
`OUT/training.json` records how it was made, on top of the shipped default's own record.
"""

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lychee_hf import register_auto_classes
from lychee_hf.default_model import SHIPPED_WEIGHTS, default_model_path, export_shipped_weights
from lychee_hf.modeling import LycheeMemoryForCausalLM
from lychee_hf.training.curriculum import curriculum_examples
from lychee_hf.training.reasoner import train_reasoner_sft
from lychee_hf.training.span_choice import train_span_choice
from lychee_hf.training.trainer_utils import LycheeTrainingArguments

SEED = 2000  # the families SFT used 1000-1001: other documents
OBJECTIVES = {
    "teacher": "gold-fact teacher on the training genres and training facts, continuing the reasoner adapter",
    "span-choice": "span choice (cross-entropy of the gold span among its sentence's candidates, the final turn's "
    "mean log-probabilities) on the training genres and training facts, continuing the reasoner adapter",
}
# The shipped record's key for a continuation of each objective (a later one keeps the earlier ones).
RECORD_KEYS = {"teacher": "genres_continuation", "span-choice": "span_choice_continuation"}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", choices=list(OBJECTIVES), default="teacher", help="what the steps train")
    parser.add_argument("--out", required=True, type=Path, help="folder for checkpoints and the trained model")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (8 teacher steps or span choices each)")
    parser.add_argument("--genres", type=int, default=150, help="training-genre documents per length")
    parser.add_argument("--facts", type=int, default=50, help="training-family documents per length (kept in mix)")
    parser.add_argument("--lengths", default="1000,2000", help="document lengths in tokens, comma-separated")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--unchanged-fraction", type=float, default=0.1, help="share of no-new-fact steps kept")
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    parser.add_argument("--export", type=Path, help="write the trained adapter as the default ships it, then stop")
    return parser.parse_args()


def settings_of(args) -> dict:
    names = ["objective", "steps", "genres", "facts", "lengths", "learning_rate", "unchanged_fraction"]
    return {name: getattr(args, name) for name in names}


def check_out_folder(args) -> None:
    settings_file = args.out / "settings.json"
    if args.out.exists() and any(args.out.iterdir()):
        if not args.resume:
            raise SystemExit(f"{args.out} holds an earlier run: add --resume to continue it, or choose a new --out")
        if json.loads(settings_file.read_text(encoding="utf-8")) != settings_of(args):
            raise SystemExit(f"{args.out} was started with other settings ({settings_file}): resume with the same")
    args.out.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings_of(args)) + "\n", encoding="utf-8")


def train(args) -> None:
    check_out_folder(args)
    torch.manual_seed(0)
    register_auto_classes()  # the folder's config names the model classes (auto_map) for AutoTokenizer
    path = default_model_path(trained=True)
    model = LycheeMemoryForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lengths = [int(length) for length in args.lengths.split(",")]
    examples = curriculum_examples(tokenizer, ["genres"], lengths, args.genres, seed=SEED)
    examples += curriculum_examples(tokenizer, ["facts"], lengths, args.facts, seed=SEED)
    training_args = LycheeTrainingArguments(
        output_dir=str(args.out / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=8,
        learning_rate=args.learning_rate,
        warmup_steps=5,
        logging_steps=10,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        seed=SEED,
    )
    started = time.perf_counter()
    if args.objective == "teacher":
        trainer = train_reasoner_sft(
            model, tokenizer, examples, training_args, args.unchanged_fraction,
            resume_from_checkpoint=args.resume or None,
        )  # fmt: skip
    else:
        resume = args.resume or None
        trainer = train_span_choice(model, tokenizer, examples, training_args, resume_from_checkpoint=resume)
    log = [entry for entry in trainer.state.log_history if "loss" in entry]
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    record = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "base": "the shipped default (src/lychee_hf/default_weights/training.json, kept below)",
        "objective": OBJECTIVES[args.objective],
        "settings": settings_of(args),
        "seed": SEED,
        "rows": len(trainer.train_dataset),
        "optimizer_steps": trainer.state.global_step,
        "loss_first_logged": log[0]["loss"] if log else None,
        "loss_last_logged": log[-1]["loss"] if log else None,
        "seconds_last_invocation": round(time.perf_counter() - started),
        "base_record": json.loads((SHIPPED_WEIGHTS / "training.json").read_text(encoding="utf-8")),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"trained {trainer.state.global_step} steps: {args.out}")


def export(args) -> None:
    """Writes the trained adapter (and the unchanged memory-token weights) as the default ships them; the shipped
    record keeps the base default's stages and adds this run under its objective's key (`RECORD_KEYS`)."""
    record_file = args.out / "training.json"
    if not record_file.is_file():
        raise SystemExit(f"{args.out} holds no finished run (no training.json): train first")
    register_auto_classes()
    model = LycheeMemoryForCausalLM.from_pretrained(args.out)
    record = json.loads(record_file.read_text(encoding="utf-8"))
    base = record.pop("base_record")
    options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in record["settings"].items())
    provenance = {
        **base,
        "date": record["date"],
        "reproduce": f"{base['reproduce']}; then python examples/train_default_on_genres.py --out OUT {options}",
        RECORD_KEYS[record["settings"].get("objective", "teacher")]: record,
    }
    for written in export_shipped_weights(model, args.export, provenance):
        print(f"wrote {written} ({written.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    arguments = parse_arguments()
    export(arguments) if arguments.export else train(arguments)
