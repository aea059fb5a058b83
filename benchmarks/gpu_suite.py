"""One prepared GPU check: random-weight LycheeMemory models at Qwen2.5-0.5B and 7B shapes, one Markdown table.

    python benchmarks/gpu_suite.py --out gpu_suite.md          # one CUDA GPU, bf16, under 8 minutes on an H200
    python benchmarks/gpu_suite.py --smoke                     # toy sizes on CPU in float32 (what CI runs)

Nothing is downloaded: the models are Qwen2 configurations built in code with random weights (the tokenizer is
the tests' tiny BPE, built in code too), so throughput, memory and agreement are measured, answers are not.
Per shape, in this order (each row says what it measured; a failing check becomes an `error:` row and the rest
still run; checks that would start after `--budget` seconds are skipped and say so):

1. matmul: the measured dense bf16 matmul rate (8192^3), the yardstick for the compressor.
2. compressor: tokens/s compressing a document (chunk 4096, window 2048, ratio 4), the fraction of the matmul
   rate that is (matmul FLOPs 2 * params * (raw + memory tokens), attention excluded), and the time relative
   to a plain backbone forward over the same tokens in 2048-token windows (the ideal is about 1.25x).
3. attention: eager vs sdpa (and flash_attention_2 when `flash_attn` imports): max difference of one block's
   K/V relative to their magnitude, and greedy answer tokens equal to eager's.
4. bank on host memory: `max_memory_allocated` above the weights while answering from banks of 32K to 1M
   tokens kept on the CPU (blocks of one compressed 32K document, repeated), query-likelihood gate reading at
   most 2 blocks; flat is the goal. Seconds per question beside it.
5. vs MemAgent: seconds per question over a 32K-token document, LycheeMemory (compress + every block read) vs
   the MemAgent loop (`lychee_hf.eval.baselines`, 5000-token raw chunks), every memory update and answer of a
   fixed length; and per question from a prebuilt bank.
6. bitsandbytes: NF4 4-bit vs bf16, weights and peak memory compressing 8K tokens and answering (the model is
   saved to a temporary folder and loaded both ways with `from_pretrained`).

Exit status 1 when any check failed.
"""

import argparse
import gc
import importlib.util
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import BitsAndBytesConfig, GenerationConfig, Qwen2Config

from lychee_hf import LycheeMemoryBank, LycheeMemoryConfig, LycheeMemoryForCausalLM
from lychee_hf.data import make_niah
from lychee_hf.eval.baselines import configured, run_method
from lychee_hf.modeling.templates_lychee import template_config_ids

QWEN = dict(rope_theta=1_000_000.0, max_position_embeddings=32768, rms_norm_eps=1e-6)
SHAPES = {
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=8192),
    "0.5b": dict(QWEN, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(QWEN, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip


@dataclass
class Settings:
    shapes: list[str]
    dtype: torch.dtype
    chunk: int = 4096
    window: int = 2048
    ratio: int = 4
    compress_tokens: dict = field(default_factory=lambda: {"0.5b": 65536, "7b": 32768})
    bank_tokens: tuple = (32768, 131072, 524288, 1048576)
    document_tokens: int = 32768
    memagent_chunk: int = 5000
    update_tokens: int = 64
    answer_tokens: int = 16
    bnb_tokens: int = 8192
    matmul_size: int = 8192
    matmul_rate: float | None = None  # measured by the first check


FULL = Settings(shapes=["0.5b", "7b"], dtype=torch.bfloat16)
SMOKE = Settings(
    shapes=["toy"],
    dtype=torch.float32,
    chunk=64,
    window=32,
    compress_tokens={"toy": 256},
    bank_tokens=(128, 512),
    document_tokens=200,
    memagent_chunk=100,
    update_tokens=4,
    answer_tokens=4,
    bnb_tokens=128,
    matmul_size=256,
)


class Suite:
    """Runs checks in order, each into table rows; a check that raises becomes an `error:` row."""

    def __init__(self, budget: float):
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed = False
        self.started, self.budget = time.perf_counter(), budget

    def check(self, name: str, shape: str, function, *args, expected_seconds: float = 0.0) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed + expected_seconds > self.budget:
            self.rows.append((name, shape, "-", f"skipped: {elapsed:.0f} s used of the {self.budget:.0f} s budget"))
            return
        print(f"[{elapsed:6.1f} s] {name} {shape}", file=sys.stderr, flush=True)
        try:
            for setting, result in function(*args):
                self.rows.append((name, shape, setting, result))
        except Exception as error:  # one failed check must not cost the rest of a short GPU window
            self.failed = True
            self.rows.append((name, shape, "-", f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}"))

    def table(self) -> str:
        lines = ["| check | model | setting | result |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- helpers
def build_tokenizer():
    """The tests' tiny BPE tokenizer with a chat template, built in code (no download)."""
    from lychee_hf.testing import tiny_tokenizer

    return tiny_tokenizer()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def timed():
    sync()
    result = {"s": 0.0}
    started = time.perf_counter()
    yield result
    sync()
    result["s"] = time.perf_counter() - started


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fixed_length(tokens: int) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB" if nbytes >= 10 * 2**20 else f"{nbytes / 2**20:.2f} MiB"


def build_model(shape: str, settings: Settings, tokenizer, attn: str = "sdpa") -> LycheeMemoryForCausalLM:
    """A random-weight LycheeMemory model at `shape`, built straight on the device in `settings.dtype`."""
    text = Qwen2Config(**SHAPES[shape], eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text._attn_implementation = attn
    knobs = dict(
        chunk_size=settings.chunk,
        compression_window=settings.window,
        compression_ratio=settings.ratio,
        memory_budget=settings.update_tokens,
        max_answer_tokens=settings.answer_tokens,
        gate_type="query_likelihood",
    )
    config = LycheeMemoryConfig(
        text_config=text, **template_config_ids(tokenizer, gate_type="query_likelihood"), **knobs
    )
    config._attn_implementation = attn
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(settings.dtype)
        with torch.device(device()):
            model = LycheeMemoryForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return model.eval()


def random_ids(tokens: int, tokenizer, seed: int = 0) -> torch.LongTensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, len(tokenizer), (1, tokens), generator=generator).to(device())


def question(tokenizer) -> torch.LongTensor:
    return torch.tensor([tokenizer.encode("What is the special magic number?", add_special_tokens=False)]).to(device())


def ask(model, bank, settings: Settings, tokenizer, **kwargs) -> torch.LongTensor:
    """One question from `bank`, every memory update and the answer of a fixed length (random weights)."""
    return model.generate(
        input_ids=question(tokenizer),
        bank=bank,
        generation_config=fixed_length(settings.answer_tokens),
        memory_generation_config=fixed_length(settings.update_tokens),
        show_progress=False,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------- checks
def check_matmul(settings: Settings):
    n, dtype = settings.matmul_size, settings.dtype
    a, b = (torch.randn(n, n, dtype=dtype, device=device()) for _ in range(2))
    a @ b  # warm-up
    repeats = 20
    with timed() as t:
        for _ in range(repeats):
            a @ b
    rate = 2 * n**3 * repeats / t["s"]
    settings.matmul_rate = rate
    yield f"{n}^3 {str(dtype).removeprefix('torch.')}", f"{rate / 1e12:.3g} TFLOP/s"


def check_compressor(model, settings: Settings, shape: str, tokenizer):
    tokens = settings.compress_tokens[shape]
    ids = random_ids(tokens, tokenizer)
    with torch.inference_mode():
        model.compress(ids[:, : settings.chunk], show_progress=False)  # warm-up
        with timed() as compress:
            model.compress(ids, show_progress=False)
        with timed() as plain:
            for start in range(0, tokens, settings.window):
                model.model(input_ids=ids[:, start : start + settings.window], use_cache=False)
    layers = sum(p.numel() for p in model.model.layers.parameters())
    flops = 2 * layers * tokens * (1 + 1 / settings.ratio)
    fraction = flops / compress["s"] / settings.matmul_rate if settings.matmul_rate else None
    setting = f"{tokens} tokens, chunk {settings.chunk}, window {settings.window}, ratio {settings.ratio}"
    yield setting, f"{tokens / compress['s']:,.0f} tokens/s ({compress['s']:.2f} s)"
    if fraction is not None:
        yield "matmul FLOPs / time / matmul rate", f"{fraction:.1%} of the measured matmul rate"
    yield f"compress / plain forward ({settings.window}-token windows)", f"{compress['s'] / plain['s']:.2f}x"


def check_attention(model, settings: Settings, tokenizer):
    implementations = ["eager", "sdpa"]
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        implementations.append("flash_attention_2")
    ids = random_ids(2 * settings.chunk, tokenizer, seed=1)
    reference = None
    try:
        for implementation in implementations:
            model.set_attn_implementation(implementation)
            with torch.inference_mode():
                bank = model.compress(ids, show_progress=False)
                answer = ask(model, bank, settings, tokenizer)
            block = bank.block(0)
            if reference is None:
                reference = (block, answer)
                continue
            scale = max(float(reference[0].keys.abs().max()), float(reference[0].values.abs().max()))
            diff = max(
                float((block.keys - reference[0].keys).abs().max()),
                float((block.values - reference[0].values).abs().max()),
            )
            same = int((answer == reference[1]).sum()) - question(tokenizer).shape[1]
            total = reference[1].shape[1] - question(tokenizer).shape[1]
            yield (
                f"{implementation} vs eager",
                f"K/V max diff {diff / scale:.2e} of max abs K/V; answer tokens {same}/{total}",
            )
    finally:
        model.set_attn_implementation("sdpa")
    if "flash_attention_2" not in implementations:
        yield "flash_attention_2", "not run (flash_attn not importable or no CUDA)"


def check_host_bank(model, settings: Settings, tokenizer):
    base_tokens = settings.bank_tokens[0]
    with torch.inference_mode():
        base = model.compress(random_ids(base_tokens, tokenizer, seed=2), show_progress=False, offload_to_cpu=True)
    blocks = [base.block(i) for i in range(len(base))]
    for tokens in settings.bank_tokens:
        repeated = [blocks[i % len(blocks)] for i in range(tokens // settings.chunk)]
        bank = LycheeMemoryBank(
            [b.shifted(i * settings.chunk - b.span[0]) for i, b in enumerate(repeated)], base.fingerprint
        )
        free_memory()
        before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with timed() as t:
            ask(model, bank, settings, tokenizer, gate_max_blocks=2)
        peak = mib(torch.cuda.max_memory_allocated() - before) if torch.cuda.is_available() else "n/a (no CUDA)"
        yield (
            f"{tokens:,} tokens ({len(bank)} blocks on the host)",
            f"peak above weights {peak}; {t['s']:.1f} s / question",
        )


def check_memagent(model, settings: Settings, tokenizer):
    example = make_niah(tokenizer, settings.document_tokens, 1, seed=0)[0]
    configs = dict(
        generation_config=fixed_length(settings.answer_tokens),
        memory_generation_config=fixed_length(settings.update_tokens),
    )
    lychee = run_method("lychee-nogate", model, tokenizer, example, **configs)
    memagent = run_method(
        "memagent", model, tokenizer, example, memagent_chunk_tokens=settings.memagent_chunk, **configs
    )
    context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)]).to(device())
    asked = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)]).to(device())
    with configured(model, gate_type="always_related"), torch.inference_mode():
        bank = model.compress(context, show_progress=False)
        with timed() as t:
            model.generate(input_ids=asked, bank=bank, show_progress=False, **configs)
    ratio = lychee.stats["seconds"] / memagent.stats["seconds"]
    setting = f"{context.shape[1]:,} tokens, updates {settings.update_tokens} tokens"
    yield (
        setting,
        (
            f"lychee {lychee.stats['seconds']:.1f} s ({lychee.stats['steps']} blocks, compression included) vs "
            f"memagent {memagent.stats['seconds']:.1f} s ({memagent.stats['steps']} chunks): {ratio:.2f}x"
        ),
    )
    yield "per question from a prebuilt bank", f"{t['s']:.1f} s ({t['s'] / memagent.stats['seconds']:.2f}x memagent)"


def check_bitsandbytes(folder: str, settings: Settings, tokenizer):
    """Loads the saved model in its dtype and in NF4 (nothing else resident) and measures both."""
    if importlib.util.find_spec("bitsandbytes") is None:
        yield "-", "not run (pip install bitsandbytes)"
        return
    results = {}
    for name in (str(settings.dtype).removeprefix("torch."), "nf4"):
        quantization = None
        if name == "nf4":
            quantization = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=settings.dtype
            )
        free_memory()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        loaded = LycheeMemoryForCausalLM.from_pretrained(
            folder, dtype=settings.dtype, quantization_config=quantization, device_map=str(device())
        ).eval()
        weights = loaded.get_memory_footprint()
        with torch.inference_mode():
            bank = loaded.compress(random_ids(settings.bnb_tokens, tokenizer, seed=3), show_progress=False)
            ask(loaded, bank, settings, tokenizer)
        results[name] = (weights, torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None)
        del loaded, bank
    (base_name, base), (_, nf4) = results.items()
    yield "weights", f"{base_name} {mib(base[0])} vs NF4 {mib(nf4[0])} ({nf4[0] / base[0]:.2f}x)"
    if base[1] is not None:
        yield (
            f"peak allocated, load + compress {settings.bnb_tokens} tokens + answer",
            (f"{base_name} {mib(base[1])} vs NF4 {mib(nf4[1])} ({nf4[1] / base[1]:.2f}x)"),
        )


# --------------------------------------------------------------------------------------------- main
def run(settings: Settings, budget: float) -> Suite:
    tokenizer = build_tokenizer()
    suite = Suite(budget)
    suite.check("matmul", "-", check_matmul, settings)
    for shape in settings.shapes:
        free_memory()
        model = build_model(shape, settings, tokenizer)
        suite.check("compressor", shape, check_compressor, model, settings, shape, tokenizer)
        suite.check("attention", shape, check_attention, model, settings, tokenizer)
        suite.check("bank on host", shape, check_host_bank, model, settings, tokenizer)
        suite.check("vs MemAgent", shape, check_memagent, model, settings, tokenizer)
        with tempfile.TemporaryDirectory() as folder:
            cost = {"7b": 200.0, "0.5b": 30.0}.get(shape, 0.0)  # saving 15 GB and loading it twice takes minutes
            suite.check("save", shape, save_model, model, folder, expected_seconds=cost)
            del model  # the bitsandbytes check measures the loaded copies alone
            if any(Path(folder).iterdir()):
                suite.check("bitsandbytes", shape, check_bitsandbytes, folder, settings, tokenizer)
    return suite


def save_model(model, folder: str):
    with timed() as t:
        model.save_pretrained(folder)
    yield "save_pretrained (for the bitsandbytes check)", f"{t['s']:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes, float32, any device (CI)")
    parser.add_argument("--shapes", help="comma-separated subset of 0.5b,7b")
    parser.add_argument(
        "--budget", type=float, default=420.0, help="start no check expected to end after this many seconds"
    )
    parser.add_argument("--out", help="also write the table (with its header) to this Markdown file")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.shapes:
        settings.shapes = args.shapes.split(",")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    header = (
        f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d')}, "
        f"{'smoke (toy sizes)' if args.smoke else 'random-weight Qwen2.5 shapes'}, "
        f"{str(settings.dtype).removeprefix('torch.')}"
    )
    suite = run(settings, args.budget)
    text = f"{header}\n\n{suite.table()}\n\ntotal {time.perf_counter() - suite.started:.0f} s\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
