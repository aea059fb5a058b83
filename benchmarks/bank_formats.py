"""Memory-bank storage formats: size, K/V error, answers, read speed; and the cost of the weights digest.

    python benchmarks/bank_formats.py                                   # embedded default, niah + mhqa, 2K and 8K
    python benchmarks/bank_formats.py --tasks niah --lengths 4k --n 2 --modes lossless
    python benchmarks/bank_formats.py --model PATH --lengths 8k,32k --n 16
    # the int4 agreement measurement (54 questions: held-out facts at 2K and 8K, the README's six questions)
    python benchmarks/bank_formats.py --tasks facts-heldout,readme --lengths 2k,8k --n 24 --modes lossless \
        --formats float32,int8,int4,int4-kivi,int4-o16,int4-k8 --skip-digest

Formats are the `bank_dtype` names (new banks' layout: int4 = KIVI keys with 8 float16 outlier channels per head,
rotated per-token values) plus named variants: `int4-kivi` / `int8-kivi` are the layouts banks had before (plain
KIVI groups), `int4-rot` rotates keys and values and keeps no outlier channels, `int4-o16` is int4 with 16 float16
key channels per head, `int4-k8` int4's rotated values with int8 KIVI keys. The `readme` task is the README's
example document with its six questions (one example, any length).

For each block kind (`lossless`, `ratio4` = memory tokens at ratio 4) and each generated example, the document is
compressed once into an exact float32 bank; every format is written to disk from it (`bank_dtype`), read back
from disk and asked the example's question (greedy). Per format the table gives:

- MiB per 1K document tokens on disk (shards + headers) and the size relative to float32;
- max and mean absolute K/V error against the float32 bank, over real (unpadded) slots;
- answer agreement: the fraction of questions whose answer equals the float32 bank's answer, and sub-EM;
- seconds per question (gate + memory updates + answer, reading the bank from disk, warm page cache);
- reading throughput in blocks/s of the largest bank, with checksums, as the reasoner pays it (read + dequantize
  to the model's dtype): cold (the shard files evicted from the page cache first with posix_fadvise) and warm.

Then the weights digest: its first computation and a cached call on the model, and the SHA-256 throughput of the
same code on 1 GiB of bfloat16 tensors, giving an estimate for a 7B-parameter model in bfloat16 (15.2 GB).
"""

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryBank, LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, QAExample, parse_length
from lychee_hf.metrics import substring_match
from lychee_hf.modeling.bank_storage_lychee import StorageFormat
from lychee_hf.modeling.fingerprint_lychee import hash_tensors
from lychee_hf.modeling.kv_quant_lychee import BANK_DTYPES, KEY_GROUP_SIZE, VALUE_GROUP_SIZE, QuantizedKV

MODES = {"lossless": {"compression_mode": "lossless"}, "ratio4": {"compression_mode": "memory_tokens"}}
PARAMS_7B = 7.6e9  # Qwen2.5-7B
ROOT = Path(__file__).resolve().parents[1]
# Layouts to compare with the formats new banks get: the pre-rotation KIVI layouts, and variants.
VARIANTS = {
    "int8-kivi": StorageFormat("int8", 128, 128),
    "int4-kivi": StorageFormat("int4", 128, 64),
    "int4-rot": StorageFormat("int4", 128, 64, "hadamard", "hadamard"),  # both parts rotated, no outlier channels
    # int4 with twice the float16 key channels (16 of 64 per head), and int8 keys with int4's rotated values.
    "int4-o16": StorageFormat("int4", 128, 64, None, "hadamard", key_outliers=16),
    "int4-k8": StorageFormat("int4", 128, 64, None, "hadamard", key_bits=8),
}


def storage_of(name: str) -> "str | StorageFormat":
    return VARIANTS.get(name, name)


def readme_examples() -> list[QAExample]:
    """The README's example document and its six natural questions (benchmarks/readme_claims.py), as examples."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_claims", ROOT / "benchmarks" / "readme_claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    context = claims.DOCUMENT.read_text(encoding="utf-8")
    return [
        QAExample(f"readme-{i}", "readme", context, question, [answer], [], 0)
        for i, (question, answer) in enumerate(claims.QUESTIONS.items())
    ]


def dense(kv) -> torch.Tensor:
    return kv.dequantize() if isinstance(kv, QuantizedKV) else kv.float()


def answer(model, tokenizer, bank, question: str) -> tuple[str, float]:
    ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
    started = time.perf_counter()
    out = model.generate(input_ids=ids, bank=bank, do_sample=False, show_progress=False)
    seconds = time.perf_counter() - started
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip(), seconds


def evict(paths: list[Path]) -> None:
    """Drops the files from the page cache (Linux; without it the 'cold' pass is warm)."""
    for path in paths:
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_rate(folder: Path, dtype: torch.dtype) -> tuple[float, float]:
    """Blocks/s reading every block (checksummed) and dequantizing it to `dtype`: a cold pass, then the best of
    three warm passes (the machine is shared)."""
    rates = []
    for cold in (True, False, False, False):
        bank = LycheeMemoryBank.from_pretrained(folder)
        if cold:
            evict(bank.stored_files())
        started = time.perf_counter()
        for index in range(len(bank)):
            block = bank.block(index)
            dense(block.keys).to(dtype), dense(block.values).to(dtype)
        rates.append(len(bank) / (time.perf_counter() - started))
    return rates[0], max(rates[1:])


def run_mode(args, mode: str, tokenizer, work: Path) -> dict:
    model = LycheeMemoryForCausalLM.from_pretrained(args.model, **MODES[mode]).eval()
    stats = {
        f: {"bytes": 0, "tokens": 0, "max": 0.0, "abs": 0.0, "n": 0, "agree": 0, "em": 0.0, "s": 0.0}
        for f in args.formats
    }
    questions, largest, exact, context = 0, None, None, None
    for task in args.tasks:
        lengths = [None] if task == "readme" else args.lengths
        for length in lengths:
            examples = readme_examples() if task == "readme" else TASKS[task](tokenizer, length, args.n, seed=args.seed)
            for example in examples:
                if example.context != context:  # the README's six questions share one document: compress it once
                    ids = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
                    exact, context = model.compress(ids, show_progress=False, bank_dtype="float32"), example.context
                reference = None
                questions += 1
                for fmt in args.formats:
                    folder = work / mode / fmt
                    shutil.rmtree(folder, ignore_errors=True)
                    exact.save_pretrained(folder, bank_dtype=storage_of(fmt))
                    bank = LycheeMemoryBank.from_pretrained(folder)
                    entry = stats[fmt]
                    entry["bytes"] += sum(p.stat().st_size for p in folder.iterdir())
                    entry["tokens"] += bank.num_tokens
                    for index in range(len(bank)):
                        stored, original = bank.block(index), exact.block(index)
                        real = original.mask
                        for got, want in ((stored.keys, original.keys), (stored.values, original.values)):
                            error = (dense(got) - want)[:, :, real].abs()
                            entry["max"] = max(entry["max"], float(error.max()))
                            entry["abs"] += float(error.sum())
                            entry["n"] += error.numel()
                    text, seconds = answer(model, tokenizer, bank, example.question)
                    reference = text if fmt == "float32" else reference
                    entry["agree"] += int(text == reference)
                    entry["em"] += substring_match(text, example.answers)
                    entry["s"] += seconds
                    if args.verbose:
                        print(f"  {mode} {example.id} {fmt}: {text!r} ({seconds:.1f} s)", flush=True)
                if largest is None or exact.num_tokens > largest:
                    largest = exact.num_tokens
                    for fmt in args.formats:  # keep the largest bank of each format for the read test
                        shutil.rmtree(work / mode / f"read-{fmt}", ignore_errors=True)
                        shutil.copytree(work / mode / fmt, work / mode / f"read-{fmt}")
    for fmt in args.formats:
        stats[fmt]["read"] = read_rate(work / mode / f"read-{fmt}", model.dtype)
    stats["_questions"], stats["_largest"] = questions, largest
    stats["_blocks"] = len(LycheeMemoryBank.from_pretrained(work / mode / f"read-{args.formats[0]}"))
    return stats


def print_table(mode: str, stats: dict, formats: list[str]) -> None:
    questions = stats["_questions"]
    print(f"\n{mode}: {questions} questions; read test on a {stats['_largest']}-token bank ({stats['_blocks']} blocks)")
    print("| format | MiB / 1K tokens | smaller than float32 | max abs K/V err | mean abs K/V err | "
          "answer agreement | sub-EM | s / question | read blocks/s cold | warm |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = stats["float32"]["bytes"] / stats["float32"]["tokens"] if "float32" in stats else None
    for fmt in formats:
        entry = stats[fmt]
        per_token = entry["bytes"] / entry["tokens"]
        cold, warm = entry["read"]
        cells = [
            fmt,
            f"{per_token * 1000 / 2**20:.2f}",
            f"{base / per_token:.2f}x",
            f"{entry['max']:.4f}",
            f"{entry['abs'] / entry['n']:.5f}",
            f"{entry['agree'] / questions:.3f} ({entry['agree']}/{questions})",
            f"{entry['em'] / questions:.3f}",
            f"{entry['s'] / questions:.1f}",
            f"{cold:.1f}",
            f"{warm:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


def digest_cost(args) -> None:
    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    covered = sum(p.numel() * p.element_size() for p in (*model.model.parameters(), *model.compressor.parameters()))
    started = time.perf_counter()
    model.memory_fingerprint()
    first = time.perf_counter() - started
    started = time.perf_counter()
    model.memory_fingerprint()
    cached = time.perf_counter() - started
    tensors = [(f"w{i}", torch.randn(4096, 4096, dtype=torch.bfloat16)) for i in range(32)]  # 1 GiB
    started = time.perf_counter()
    hash_tensors(tensors)
    rate = 2**30 / (time.perf_counter() - started)
    print("\nweights digest (SHA-256 of every weight that shapes a block's K/V)")
    print("| measure | value |")
    print("|---|---|")
    print(f"| embedded default, first call ({covered / 2**20:.0f} MiB hashed) | {first:.2f} s |")
    print(f"| embedded default, cached call | {cached * 1000:.1f} ms |")
    print(f"| hash throughput (1 GiB of bf16 tensors) | {rate / 2**30:.2f} GiB/s |")
    print(f"| estimate, 7B model in bf16 ({PARAMS_7B * 2 / 1e9:.1f} GB), first call | {PARAMS_7B * 2 / rate:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the embedded SmolLM2-135M model)")
    parser.add_argument("--tasks", default="niah,mhqa")
    parser.add_argument("--lengths", default="2k,8k")
    parser.add_argument("--n", type=int, default=2, help="examples per task and length")
    parser.add_argument("--modes", default="lossless,ratio4")
    parser.add_argument("--formats", default=",".join(BANK_DTYPES), help=f"bank_dtype names and {list(VARIANTS)}")
    parser.add_argument("--skip-digest", action="store_true", help="leave out the weights-digest table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--groups",
        help="override quantization groups, e.g. int4=32/32 (slots per key group / channels per value group)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()
    if args.model is None:
        from lychee_hf.default_model import ensure_default_model

        args.model = str(ensure_default_model(verbose=False))
    args.tasks, args.modes = args.tasks.split(","), args.modes.split(",")
    args.lengths = [parse_length(x) for x in args.lengths.split(",")]
    args.formats = args.formats.split(",")
    if args.formats[0] != "float32":
        raise SystemExit("--formats must start with float32 (the reference)")
    for override in args.groups.split(",") if args.groups else []:
        name, sizes = override.split("=")
        KEY_GROUP_SIZE[name], VALUE_GROUP_SIZE[name] = (int(x) for x in sizes.split("/"))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; tasks {args.tasks}, lengths "
        f"{args.lengths}, n={args.n} per task and length, seed {args.seed}, greedy; groups (key/value) "
        + ", ".join(f"{k} {KEY_GROUP_SIZE[k]}/{VALUE_GROUP_SIZE[k]}" for k in KEY_GROUP_SIZE)
        + "; formats: "
        + ", ".join(f"{f} {StorageFormat.for_dtype(f) if f in BANK_DTYPES else VARIANTS[f]}" for f in args.formats)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for mode in args.modes:
            print_table(mode, run_mode(args, mode, tokenizer, Path(work)), args.formats)
    if not args.skip_digest:
        digest_cost(args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
