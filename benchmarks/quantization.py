"""Quantized LycheeMemory: bitsandbytes 4-bit and 8-bit against the unquantized model, on the same inputs.

    python benchmarks/quantization.py --tiny                 # random tiny model, seconds
    python benchmarks/quantization.py                        # embedded default (SmolLM2-135M)
    python benchmarks/quantization.py --model PATH --context-tokens 8000 --dtype bfloat16

Every mode (`baseline` = unquantized in `--dtype`, `4bit` = NF4 with `--dtype` compute, `8bit` = LLM.int8) loads
the checkpoint in a fresh subprocess, so each peak is its own: CUDA `torch.cuda.max_memory_allocated`, CPU peak
RSS sampled every 5 ms (includes the interpreter and libraries). Each compresses the same needle-in-a-haystack
context and answers its question greedily, every memory update and answer decoding a fixed number of tokens, so
speeds compare. Agreement is with the baseline of the same run: answer tokens equal position by position, and
blocks after which the working memory is identical.
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import AutoTokenizer, BitsAndBytesConfig

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import make_niah
from lychee_hf.metrics import substring_match

MODES = ("baseline", "4bit", "8bit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PeakMemory:
    """Peak CUDA allocation, or peak RSS of this process sampled every 5 ms, while the block runs."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self) -> "PeakMemory":
        self.peak, self.running = 0, True
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        self.process = psutil.Process()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.running = False
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)


def load(path: str, mode: str, dtype: torch.dtype, device: str) -> LycheeMemoryForCausalLM:
    """The checkpoint at `path` unquantized in `dtype`, or quantized by bitsandbytes with `dtype` compute."""
    quantization = {
        "baseline": None,
        "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype),
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
    }[mode]
    model = LycheeMemoryForCausalLM.from_pretrained(
        path, dtype=dtype, device_map={"": device}, quantization_config=quantization
    )
    return model.eval()


def fixed_length(model: LycheeMemoryForCausalLM, tokens: int):
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None)
    return config


def run_mode(args: argparse.Namespace) -> dict:
    """Loads one mode, compresses the context and answers; returns measurements and the decoded ids."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    tokenizer = AutoTokenizer.from_pretrained(args.path)
    example = make_niah(tokenizer, args.context_tokens, 1, seed=args.seed)[0]
    context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)], device=args.device)
    question = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)], device=args.device)
    with PeakMemory(args.device) as memory:
        started = time.perf_counter()
        model = load(args.path, args.mode, dtype, args.device)
        load_seconds = time.perf_counter() - started
        # Warm-up (kernels, allocator, lazy initialisation): one chunk compressed, two tokens decoded.
        model.compress(context[:, : model.config.chunk_size], show_progress=False)
        model.generate(question[:, :4], max_new_tokens=2, do_sample=False)
        started = time.perf_counter()
        bank = model.compress(context, show_progress=False)
        compress_seconds = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(
            input_ids=question,
            bank=bank,
            generation_config=fixed_length(model, args.answer_tokens),
            memory_generation_config=fixed_length(model, args.update_tokens),
            return_dict_in_generate=True,
            show_progress=False,
        )
        answer_seconds = time.perf_counter() - started
    trace = out.trace[0]
    answer = out.sequences[0, question.shape[1] :].tolist()
    decoded = sum(r.tokens_decoded for r in trace) + len(answer)
    return {
        "mode": args.mode,
        "weights_mib": model.get_memory_footprint() / 2**20,
        "peak_mib": memory.peak / 2**20,
        "load_s": load_seconds,
        "context_tokens": context.shape[1],
        "compress_tok_s": context.shape[1] / compress_seconds,
        "answer_s": answer_seconds,
        "decoded_tokens": decoded,
        "decode_tok_s": decoded / answer_seconds,
        "kept_blocks": sum(r.kept for r in trace),
        "blocks": len(trace),
        "answer_ids": answer,
        "memories": [r.memory_ids for r in trace],
        "correct": substring_match(tokenizer.decode(answer, skip_special_tokens=True), example.answers),
    }


def tiny_checkpoint(folder: Path) -> str:
    """A random tiny Llama LycheeMemory model (the tests' `tiny_lychee`) saved with its tokenizer."""
    from lychee_hf.testing import tiny_lychee, tiny_tokenizer

    tiny_lychee(chunk_size=256, compression_window=128, memory_budget=16, max_answer_tokens=8).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def agreement(result: dict, baseline: dict) -> tuple[float, float]:
    """(answer tokens equal to the baseline's, position by position; blocks after which the memory is equal)."""
    answer, reference = result["answer_ids"], baseline["answer_ids"]
    shared = min(len(answer), len(reference))
    answers = sum(a == b for a, b in zip(answer, reference)) / shared if shared else 0.0
    memories = sum(a == b for a, b in zip(result["memories"], baseline["memories"])) / max(len(baseline["memories"]), 1)
    return answers, memories


def print_tables(results: list[dict], args: argparse.Namespace) -> None:
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = f"CPU ({psutil.cpu_count()} cores, {args.threads or torch.get_num_threads()} threads)"
    first = results[0]
    print(
        f"model {args.model_name}, baseline {args.dtype}, {device}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}\ncontext {first['context_tokens']} tokens ({first['blocks']} blocks), memory "
        f"updates {args.update_tokens} tokens, answers {args.answer_tokens} tokens; peak = "
        f"{'CUDA max allocated' if args.device.startswith('cuda') else 'process peak RSS'}\n"
    )
    print(
        "| mode | weights MiB | peak MiB | load s | compress tok/s | decode tok/s | kept blocks | answer agreement "
        "| memory agreement | correct |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    baseline = next(r for r in results if r["mode"] == "baseline")
    for r in results:
        answers, memories = agreement(r, baseline)
        print(
            f"| {r['mode']} | {r['weights_mib']:.1f} | {r['peak_mib']:.0f} | {r['load_s']:.2f} | "
            f"{r['compress_tok_s']:.0f} | {r['decode_tok_s']:.1f} | {r['kept_blocks']}/{r['blocks']} | "
            f"{answers:.2f} | {memories:.2f} | {r['correct']:.0f} |"
        )
    print("\n| mode | weights x | peak x | compress speed x | decode speed x |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mode']} | {r['weights_mib'] / baseline['weights_mib']:.2f} | "
            f"{r['peak_mib'] / baseline['peak_mib']:.2f} | {r['compress_tok_s'] / baseline['compress_tok_s']:.2f} | "
            f"{r['decode_tok_s'] / baseline['decode_tok_s']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    parser.add_argument("--tiny", action="store_true", help="a random tiny model built in code (quick check)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--update-tokens", type=int, default=16, help="tokens every memory update decodes")
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--dtype", choices=DTYPES, help="baseline and compute dtype (default: bfloat16 on CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); 1 on a shared machine")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            args.path, args.model_name = tiny_checkpoint(Path(scratch)), "tiny (random Llama, 2 layers, hidden 64)"
        elif args.model:
            args.path, args.model_name = args.model, args.model
        else:
            from lychee_hf.default_model import ensure_default_model

            args.path, args.model_name = str(ensure_default_model()), "default (SmolLM2-135M-Instruct)"
        modes = args.modes.split(",")
        if "baseline" not in modes:
            modes.insert(0, "baseline")
        results = [run_in_subprocess(args, mode) for mode in modes]
    print_tables(results, args)


def run_in_subprocess(args: argparse.Namespace, mode: str) -> dict:
    command = [sys.executable, __file__, "--mode", mode, "--path", args.path, "--device", args.device]
    for flag in ("context_tokens", "update_tokens", "answer_tokens", "dtype", "seed", "threads"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mode {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
