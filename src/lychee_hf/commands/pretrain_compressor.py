"""`lychee-hf pretrain-compressor`: train the memory tokens (continuation loss through a compressed block).

Its options are the text and the model (below), and the fields of `CompressorPretrainingConfig` (a
`TrainingArguments`) and `LoraArguments` (an optional compressor adapter), parsed by `HfArgumentParser`: each
default and help text is the field's (`--distill-weight` adds the KL to lossless reading). `--reading-task` adds
reading rows (a block, then the memory-update prompt and the gold-fact memory, scored on the memory) built from
generated examples of seed 1000, disjoint from evaluation's default seed 0.
"""

import argparse
import json
from pathlib import Path

from . import arguments as options
from .loading import load_model, main_process, save_trained, start_training, training_folder

NAME = "pretrain-compressor"
HELP = "train the memory tokens (continuation loss through a compressed block)"
EXAMPLES = """examples:
  lychee-hf pretrain-compressor --ratio 4 --out pretrained/ --max-train-rows 512
  lychee-hf pretrain-compressor --ratio 4 --text corpus.txt --out pretrained/
  lychee-hf pretrain-compressor --ratio 4 --distill-weight 1 --reading-task facts --reading-n 200 --out pretrained/"""

# Generator seed of the reading rows' examples: the training seed of every generated curriculum, apart from eval's 0.
READING_SEED = 1000


def add_parser(commands, full: bool = True) -> argparse.ArgumentParser:
    """The command's parser; `full=False` leaves out its options (which import transformers to build)."""
    if not full:
        return options.add_training_command(commands, NAME, HELP, EXAMPLES, None)
    from ..training.compressor import CompressorPretrainingConfig
    from ..training.trainer_utils import LoraArguments

    parser = options.add_training_command(
        commands,
        NAME,
        HELP,
        EXAMPLES,
        [CompressorPretrainingConfig, LoraArguments],
        names={"lora_r": "--compressor-lora-r"},
    )
    parser.add_argument("--out", required=True, help="new folder: the model with trained memory weights + metrics")
    parser.add_argument("--text", help="a UTF-8 text file to train on (default: CPython's bundled docs)")
    parser.add_argument(
        "--reading-task",
        choices=options.GENERATED_TASKS.split(", "),
        help="also train on reading rows of this generated task (block + memory-update prompt, memory scored)",
    )
    parser.add_argument("--reading-n", type=options.positive_int, default=200, help="examples of --reading-task")
    parser.add_argument("--reading-length", default="1000", help="context length of the --reading-task examples")
    # No compressor adapter unless a rank is given: by default only the memory embedding and projections train.
    parser.set_defaults(lora_r=None)
    options.cli_help(
        parser, "lora_r", "also train a compressor LoRA adapter of this rank (shaped by the options below)"
    )
    # The CLI scores 32 held-out windows before and after training, so that a short run is not mostly evaluation.
    parser.set_defaults(max_eval_rows=32)
    # Seed 0, the CLI's seed since its first release: a rerun reproduces earlier runs (the library keeps 42).
    parser.set_defaults(seed=0)
    options.cli_help(parser, "seed", "seed of the window split and training")
    options.add_training_options(parser, memory_budget=False)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data import load_examples, parse_length
    from ..training.compressor import CompressorPretrainingConfig, pretrain_compressor, reading_rows
    from ..training.trainer_utils import LoraArguments

    out = training_folder(args)
    config = options.training_config(args, CompressorPretrainingConfig, out)
    peft_config = options.dataclass_from(args, LoraArguments).lora_config() if args.lora_r is not None else None
    train_text = eval_text = None  # None: CPython's bundled docs
    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        cut = int(len(text) * (1 - config.eval_fraction))  # the end of the text is held out
        train_text, eval_text = text[:cut], text[cut:]
    model, tokenizer = load_model(args)
    extra_rows = []
    if args.reading_task:
        length = parse_length(args.reading_length)
        examples = load_examples(args.reading_task, tokenizer, length, args.reading_n, READING_SEED)
        extra_rows = reading_rows(model, tokenizer, examples, seed=config.seed)
    checkpoint, runs = start_training(args, out, config.output_dir)
    result = pretrain_compressor(
        model,
        tokenizer,
        config,
        train_text,
        eval_text,
        peft_config=peft_config,
        resume_from_checkpoint=checkpoint,
        train_rows=extra_rows,
        callbacks=options.time_limit(args),
    )
    if not main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    save_trained(model, tokenizer, out)
    metrics = {
        "train_rows": result.train_rows,
        "reading_rows": len(extra_rows),
        "eval_rows": result.eval_rows,
        "before": result.before,
        "runs": runs,
    }
    metrics["after"] = result.after
    (out / "compressor_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    lines = [f"{'held-out loss (nats/token)':<28}{'before':>8}{'after':>8}", "-" * 44]
    for name in ("compressed", "raw", "none"):
        lines.append(f"{name:<28}{result.before[name]:>8.3f}{result.after[name]:>8.3f}")
    kl_before, kl_after = result.before["kl_to_lossless"], result.after["kl_to_lossless"]
    lines.append(f"{'KL to lossless reading':<28}{kl_before:>8.3f}{kl_after:>8.3f}")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0
