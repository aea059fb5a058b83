"""`lychee-hf train-rl`: end-to-end GRPO, the reasoner adapter and the compressor, rewarded on the final answer.

Its options are the curriculum (or your data) and the model (below), and the fields of `LycheeGRPOConfig` (a
`TrainingArguments`) and `LoraArguments` (a new reasoner adapter), parsed by `HfArgumentParser`: each default and
help text is the field's.
"""

import argparse
import json
import time

from . import arguments as options
from .loading import load_model, main_process, save_trained, start_training, training_folder

NAME = "train-rl"
HELP = "end-to-end GRPO: reasoner adapter + compressor, rewarded on the final answer"
EXAMPLES = """examples:
  lychee-hf train-rl --model pretrained/ --task niah,mhqa --lengths 1k,2k,4k --n 64 --out trained/
  lychee-hf train-rl --data rows.jsonl --out trained/ --max-minutes 60"""


def add_parser(commands, full: bool = True) -> argparse.ArgumentParser:
    """The command's parser; `full=False` leaves out its options (which import transformers to build)."""
    if not full:
        return options.add_training_command(commands, NAME, HELP, EXAMPLES, None)
    from ..training.rl_config import LycheeGRPOConfig
    from ..training.trainer_utils import LoraArguments

    parser = options.add_training_command(
        commands, NAME, HELP, EXAMPLES, [LycheeGRPOConfig, LoraArguments], names={"train_compressor": "--compressor"}
    )
    parser.add_argument(
        "--task", default="niah,vt", help=f"comma-separated generated tasks ({options.GENERATED_TASKS})"
    )
    parser.add_argument("--data", help="your questions instead: JSONL in the MemAgent/verl schema")
    parser.add_argument("--lengths", default="1k", help="curriculum: comma-separated context lengths, shortest first")
    parser.add_argument("--n", type=options.positive_int, default=16, help="examples per task and length")
    parser.add_argument("--held-out-seed", type=int, default=0, help="eval seed training must not use")
    parser.add_argument("--out", required=True, help="new folder: the trained model + rl_log.json")
    parser.add_argument(
        "--questions-per-step",
        type=options.positive_int,
        help="questions per device and step (default 1), or give --per-device-train-batch-size (episodes)",
    )
    # The seed also draws the curriculum's first stage: 1000 keeps it apart from the held-out seed.
    parser.set_defaults(seed=1000)
    options.cli_help(parser, "seed", "generator seed of the first stage, and training seed")
    # Episodes per step follow from --num-generations and --questions-per-step unless given.
    parser.set_defaults(per_device_train_batch_size=None)
    options.cli_help(
        parser,
        "per_device_train_batch_size",
        "episodes per device and step (default: --num-generations x --questions-per-step)",
    )
    options.cli_help(
        parser, "train_compressor", "also train the memory-token weights, through the blocks (off: the adapter only)"
    )
    options.add_training_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data import parse_length
    from ..training.curriculum import check_disjoint_seeds, check_trainable, curriculum_examples
    from ..training.rl_config import LycheeGRPOConfig
    from ..training.rl_trainer import train_rl
    from ..training.trainer_utils import LoraArguments

    out = training_folder(args)
    lengths = [parse_length(text) for text in args.lengths.split(",")]
    if not args.data:
        check_trainable(args.task.split(","))
        check_disjoint_seeds(args.seed, len(lengths), args.held_out_seed)
    config = options.training_config(
        args,
        LycheeGRPOConfig,
        out,
        per_device_train_batch_size=_episodes_per_step(args),
    )
    peft_config = options.dataclass_from(args, LoraArguments).lora_config()
    model, tokenizer = load_model(args)
    if args.data:
        from ..data import load_memagent_jsonl

        examples = load_memagent_jsonl(args.data)
    else:
        examples = curriculum_examples(tokenizer, args.task.split(","), lengths, args.n, args.seed)
    started = time.perf_counter()
    callbacks = options.time_limit(args)
    checkpoint, runs = start_training(args, out, config.output_dir)
    result = train_rl(
        model,
        tokenizer,
        examples,
        config,
        callbacks=callbacks,
        peft_config=peft_config,
        resume_from_checkpoint=checkpoint,
    )
    seconds = time.perf_counter() - started
    if not main_process():  # under accelerate launch / torchrun, the main process saves and reports
        return 0
    save_trained(model, tokenizer, out)
    log = [entry for entry in result.trainer.state.log_history if "reward" in entry]
    steps = result.trainer.state.global_step
    settings = json.loads(config.to_json_string())
    record = {
        "examples": len(examples),
        "steps": steps,
        "seconds": seconds,
        "config": settings,
        "log": log,
        "runs": runs,
    }
    (out / "rl_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(_reward_table(log))
    questions = steps * config.questions_per_device * config.gradient_accumulation_steps
    print(f"wrote {out} ({steps} steps, {questions} of {len(examples)} questions, {seconds:.0f} s)")
    return 0


def _episodes_per_step(args: argparse.Namespace) -> int:
    """Episodes per device and step: `--per_device_train_batch_size`, or num_generations x questions per step."""
    if args.per_device_train_batch_size is None:
        return args.num_generations * (args.questions_per_step or 1)
    if args.questions_per_step is not None:
        raise ValueError("--questions-per-step and --per_device_train_batch_size both set the batch: pass one of them")
    return args.per_device_train_batch_size


def _reward_table(log: list[dict], rows: int = 5) -> str:
    """Mean reward over consecutive slices of the training log (at most `rows` lines)."""
    if not log:
        return "no training steps were logged"
    size = max(1, -(-len(log) // rows))
    lines = [f"{'steps':<12}{'reward':>8}{'correct':>9}{'turns':>7}", "-" * 36]
    for start in range(0, len(log), size):
        part = log[start : start + size]
        mean = {key: sum(entry[key] for entry in part) / len(part) for key in ("reward", "answer_correct", "turns")}
        steps = f"{part[0]['step']}-{part[-1]['step']}"
        lines.append(f"{steps:<12}{mean['reward']:>8.3f}{mean['answer_correct']:>9.3f}{mean['turns']:>7.2f}")
    return "\n".join(lines)
