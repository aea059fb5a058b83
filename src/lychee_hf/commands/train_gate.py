"""`lychee-hf train-gate`: train the gate adapter (classifier) on labelled examples.

Its options are the examples to train on and the model (below), and the fields of `GateTrainingConfig` (a
`TrainingArguments`) and `LoraArguments`, parsed by `HfArgumentParser`: each default and help text is the field's.
"""

import argparse
import json

from . import arguments as options
from .loading import load_model, main_process, save_trained, start_training, training_folder

NAME = "train-gate"
HELP = "train the gate adapter (classifier) on labelled examples"
EXAMPLES = """examples:
  lychee-hf train-gate --task niah --length 4k --n 64 --out gated/
  lychee-hf train-gate --task jsonl --data rows.jsonl --out gated/"""


def add_parser(commands, full: bool = True) -> argparse.ArgumentParser:
    """The command's parser; `full=False` leaves out its options (which import transformers to build)."""
    if not full:
        return options.add_training_command(commands, NAME, HELP, EXAMPLES, None)
    from ..training.gate import GateTrainingConfig
    from ..training.trainer_utils import LoraArguments

    parser = options.add_training_command(commands, NAME, HELP, EXAMPLES, [GateTrainingConfig, LoraArguments])
    parser.add_argument(
        "--task", required=True, help=f"{options.GENERATED_TASKS} (generated) or jsonl, hotpotqa (--data)"
    )
    parser.add_argument("--data", help="JSONL (MemAgent schema + 'supporting') or HotpotQA JSON")
    parser.add_argument("--length", default="4k", help="context length of generated examples")
    parser.add_argument("--n", type=options.positive_int, default=64, help="examples (a quarter is held out)")
    parser.add_argument("--out", required=True, help="new folder: the model with its gate adapter + metrics")
    # The seed also draws the generated examples: 1000 keeps them apart from eval's default seed 0.
    parser.set_defaults(seed=1000)
    options.cli_help(parser, "seed", "generator and training seed (1000: disjoint from eval's default 0)")
    options.add_training_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data import load_examples, parse_length
    from ..training.curriculum import check_trainable
    from ..training.gate import GateTrainingConfig, train_gate
    from ..training.trainer_utils import LoraArguments

    if args.task not in ("jsonl", "hotpotqa"):
        check_trainable([args.task])
    out = training_folder(args)
    config = options.training_config(args, GateTrainingConfig, out)
    peft_config = options.dataclass_from(args, LoraArguments).lora_config()
    model, tokenizer = load_model(args)
    examples = load_examples(args.task, tokenizer, parse_length(args.length), args.n, args.seed, args.data)
    checkpoint, runs = start_training(args, out, config.output_dir)
    result = train_gate(
        model,
        tokenizer,
        examples,
        config,
        peft_config=peft_config,
        resume_from_checkpoint=checkpoint,
        callbacks=options.time_limit(args),
    )
    if not main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    save_trained(model, tokenizer, out)
    metrics = {
        "task": args.task,
        "examples": len(examples),
        "train_rows": result.train_rows,
        "eval_rows": result.eval_rows,
        "positive_weight": result.positive_weight,
        "held_out_before": result.metrics_before,
        "held_out_after": result.metrics,
        "runs": runs,
    }
    (out / "gate_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(_metrics_table(result.metrics_before, result.metrics))
    print(f"wrote {out} (gate adapter in {out / 'gate'})")
    return 0


def _metrics_table(before: dict, after: dict) -> str:
    names = ["precision", "recall", "f1", "auroc", "accuracy", "predicted_positive_rate"]
    lines = [f"{'held-out':<24}{'before':>8}{'after':>8}", "-" * 40]
    lines += [f"{name:<24}{before[name]:>8.3f}{after[name]:>8.3f}" for name in names]
    lines.append(f"{'rows (related share)':<24}{after['n']:>8}{after['positive_rate']:>8.3f}")
    return "\n".join(lines)
