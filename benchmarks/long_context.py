"""LycheeMemory vs a MemAgent-style loop vs full context, on the same inputs in one process.

    python benchmarks/long_context.py --model tiny --lengths 4k,16k,64k,128k
    python benchmarks/long_context.py --model default --lengths 4k,8k,16k,32k

Per context length and method: wall time, reasoner tokens prefilled and decoded, reasoner steps, compression
time, peak host RSS while the method ran (sampled every 5 ms) and, on CUDA, peak allocated memory; then the
ratios lychee/memagent and lychee/full, and the per-question cost with a prebuilt bank (compress once, ask N).
Every memory update decodes exactly `--update-tokens` tokens and every answer `--answer-tokens`, so untrained
or random-weight models are timed fairly. Inputs are needle-in-a-haystack examples from `lychee_hf.eval`.
"""

import argparse
import threading
import time

import psutil
import torch
from transformers import AutoTokenizer, GenerationConfig

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import make_niah, parse_length
from lychee_hf.eval.baselines import run_method


class PeakMemory:
    """Samples this process's RSS (and CUDA allocation) while the block runs."""

    def __enter__(self):
        self.process, self.peak, self.running = psutil.Process(), 0, True
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def load(model: str, max_positions: int):
    if model == "tiny":
        from lychee_hf.testing import tiny_backbone, tiny_tokenizer

        backbone = tiny_backbone("llama")
        backbone.config.max_position_embeddings = max_positions
        tokenizer = tiny_tokenizer()
        lychee = LycheeMemoryForCausalLM.from_backbone(
            backbone, tokenizer, chunk_size=4096, compression_window=2048, memory_budget=256, compress_batch_size=2
        )
        return lychee, tokenizer
    if model == "default":
        from lychee_hf.default_model import ensure_default_model

        model = str(ensure_default_model())
    return LycheeMemoryForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model)


def fixed_length(tokens: int) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def measure(method, model, tokenizer, example, args) -> dict:
    with PeakMemory() as memory:
        result = run_method(
            method,
            model,
            tokenizer,
            example,
            generation_config=fixed_length(args.answer_tokens),
            memory_generation_config=fixed_length(args.update_tokens),
            memagent_chunk_tokens=args.memagent_chunk,
        )
    return {
        **result.stats,
        "peak_rss_mib": memory.peak / 2**20,
        "cuda_peak_mib": memory.cuda_peak / 2**20 if memory.cuda_peak else None,
    }


def per_question_with_bank(model, tokenizer, example, args) -> tuple[float, float]:
    """(compression seconds, mean seconds per question) when the bank is built once and asked N times."""
    context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
    question = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)])
    started = time.perf_counter()
    bank = model.compress(context, show_progress=False)
    compress = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.questions):
        model.generate(
            input_ids=question,
            bank=bank,
            generation_config=fixed_length(args.answer_tokens),
            memory_generation_config=fixed_length(args.update_tokens),
            show_progress=False,
        )
    return compress, (time.perf_counter() - started) / args.questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (random, in code), default (embedded), or a path")
    parser.add_argument("--lengths", default="4k,16k,64k,128k")
    parser.add_argument("--methods", default="lychee,memagent,full")
    parser.add_argument("--update-tokens", type=int, default=16, help="tokens every memory update decodes")
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--memagent-chunk", type=int, default=5000)
    parser.add_argument("--questions", type=int, default=4, help="questions asked of one prebuilt bank")
    parser.add_argument("--max-positions", type=int, default=32768, help="tiny model's window (full reads this much)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load(args.model, args.max_positions)
    methods = args.methods.split(",")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({psutil.cpu_count()} cores)"
    print(f"model {args.model}, {model.dtype}, {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(
        f"memory updates {args.update_tokens} tokens, answers {args.answer_tokens} tokens, "
        f"chunk {model.config.chunk_size}, mode {model.config.compression_mode}, gate {model.config.gate_type}\n"
    )
    print("| length | method | seconds | compress s | prefill tok | decode tok | steps | peak RSS MiB | truncated |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for length in [parse_length(text) for text in args.lengths.split(",")]:
        example = make_niah(tokenizer, length, 1, seed=1)[0]
        rows = {method: measure(method, model, tokenizer, example, args) for method in methods}
        for method, r in rows.items():
            print(
                f"| {length} | {method} | {r['seconds']:.2f} | {r['compress_seconds']:.2f} | {r['prefill_tokens']} | "
                f"{r['decode_tokens']} | {r['steps']} | {r['peak_rss_mib']:.0f} | {r['truncated_tokens']} |"
            )
        compress, per_question = per_question_with_bank(model, tokenizer, example, args)
        ratios.append((length, rows, compress, per_question))
    print(
        "\n| length | time lychee/memagent | time lychee/full | RSS lychee/memagent | RSS lychee/full |"
        " bank: compress s | bank: s per question | memagent s per question |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for length, rows, compress, per_question in ratios:
        lychee, agent, full = rows.get("lychee"), rows.get("memagent"), rows.get("full")

        def ratio(a, b, key):
            return f"{a[key] / b[key]:.2f}" if a and b and b[key] else "-"

        agent_seconds = f"{agent['seconds']:.2f}" if agent else "-"
        print(
            f"| {length} | {ratio(lychee, agent, 'seconds')} | {ratio(lychee, full, 'seconds')} | "
            f"{ratio(lychee, agent, 'peak_rss_mib')} | {ratio(lychee, full, 'peak_rss_mib')} | {compress:.2f} | "
            f"{per_question:.2f} | {agent_seconds} |"
        )


if __name__ == "__main__":
    main()
