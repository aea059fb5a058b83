"""Peak host memory of `lychee-hf ask --context` against the document's length, before and now.

    python benchmarks/context_memory.py --tiny           # a tiny random model at 32K, 128K and 1M tokens
    python benchmarks/context_memory.py                  # the embedded default at 32K and 128K tokens
    python benchmarks/context_memory.py --tiny --lengths 32k,128k

Each run is a fresh `lychee-hf ask --context DOC --question Q --quiet` process, whose peak RSS (its VmHWM) is read
as it exits (`lychee_hf.testing.cli_peak_rss`). "before" is what `ask --context` did until now, the whole bank in
memory as float32 (`--bank-dtype float32 --max-bank-memory 1TB`); "now" is the default: float16 blocks in memory
up to `--max-bank-memory` (512MB), a larger bank streamed to a temporary folder as it is compressed and read back
block by block; "on disk" is `--max-bank-memory 0`, every bank through disk (the same run as "now" where the bank
goes to disk anyway). `--paths now` runs only the default (a long document's "before" takes long and much memory).

The tiny model has large lossless blocks (2 layers, 4 kv heads of 64 dims, 512-token chunks: 4 KiB per token in
float32) so that the bank dominates what a run holds; its document is random words, the default's copies of
examples/harbor_town.txt.
"""

import argparse
import datetime
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

import lychee_hf
from lychee_hf.bank_tools import bank_bytes_per_block
from lychee_hf.data import parse_length
from lychee_hf.loading import load_pretrained
from lychee_hf.testing import CORPUS, cli_peak_rss, save_tiny_checkpoint
from lychee_hf.text_banks import DEFAULT_MAX_BANK_MEMORY

PATHS = {
    "before": ["--bank-dtype", "float32", "--max-bank-memory", "1TB"],
    "now": [],
    "disk": ["--max-bank-memory", "0"],
}
TINY = dict(
    num_layers=2,
    num_kv_heads=4,
    head_dim=64,
    attn_implementation="sdpa",
    compression_mode="lossless",
    chunk_size=512,
    compression_window=512,
    memory_budget=2,
    max_answer_tokens=2,
)
HARBOR_TOWN = Path(__file__).parents[1] / "examples" / "harbor_town.txt"


def tiny_setup(folder: Path):
    """The tiny checkpoint, its model (for the bank's size), a document maker and the question."""
    checkpoint = save_tiny_checkpoint(folder / "tiny", **TINY)
    model, tokenizer = load_pretrained(str(checkpoint), quiet=True)
    words = " ".join(CORPUS).split()

    def document(n_tokens: int) -> str:
        rng = random.Random(n_tokens)
        sample = " ".join(rng.choice(words) for _ in range(2000))
        per_word = len(tokenizer.encode(sample, add_special_tokens=False)) / 2000
        chosen, target = [], 0.97 * n_tokens  # a little short, then topped up twice
        for _ in range(3):
            missing = target - len(tokenizer.encode(" ".join(chosen), add_special_tokens=False))
            chosen += [rng.choice(words) for _ in range(max(0, round(missing / per_word)))]
            target = n_tokens
        return " ".join(chosen)

    return ["--model", str(checkpoint)], model, tokenizer, document, "What is the secret code?"


def default_setup(folder: Path):
    """The embedded default, a document maker (copies of examples/harbor_town.txt) and the question."""
    model, tokenizer = lychee_hf.load_default_model()
    story = HARBOR_TOWN.read_text(encoding="utf-8")
    first = len(tokenizer.encode(story, add_special_tokens=False))
    per_copy = len(tokenizer.encode(story + "\n\n" + story, add_special_tokens=False)) - first

    def document(n_tokens: int) -> str:
        return "\n\n".join([story] * (1 + max(0, round((n_tokens - first) / per_copy))))

    return [], model, tokenizer, document, "Who founded the Saltmarsh bakery?"


def measure(model_args: list[str], path: Path, question: str, options: list[str], threads: int):
    """(peak RSS in MiB, seconds) of one `ask --context` process."""
    started = time.perf_counter()
    argv = ["ask", *model_args, "--context", path, "--question", question, "--quiet", *options]
    peak, _, _ = cli_peak_rss(*argv, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return peak / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of the embedded default")
    parser.add_argument("--lengths", help="document lengths in tokens (default: 32k,128k,1m tiny; 32k,128k default)")
    parser.add_argument("--paths", default="before,now,disk", help="which of before, now, disk to run (default: all)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (default 1: on cores other jobs share, OpenMP's waiting threads cost 20x)",
    )
    args = parser.parse_args()
    lengths = [parse_length(text) for text in (args.lengths or ("32k,128k,1m" if args.tiny else "32k,128k")).split(",")]
    print(
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, lychee-hf {lychee_hf.__version__}, "
        f"{args.threads} torch thread(s) per run; "
        f"{'tiny random model ' + str(TINY) if args.tiny else 'embedded default'}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_args, model, tokenizer, document, question = (tiny_setup if args.tiny else default_setup)(folder)
        for length in lengths:
            path = folder / f"doc-{length}.txt"
            path.write_text(document(length), encoding="utf-8")
            tokens = len(tokenizer.encode(path.read_text(encoding="utf-8"), add_special_tokens=False))
            blocks = -(-tokens // model.config.chunk_size)
            row = {"tokens": tokens, "blocks": blocks, "bank": blocks * bank_bytes_per_block(model, "float32") / 2**20}
            on_disk = blocks * bank_bytes_per_block(model, "float16") > DEFAULT_MAX_BANK_MEMORY
            row["where"] = "disk" if on_disk else "memory"
            for name in args.paths.split(","):
                same = name == "disk" and on_disk and "now" in row  # "now" went through disk already
                row[name] = row["now"] if same else measure(model_args, path, question, PATHS[name], args.threads)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(
        "| tokens | blocks | bank float32 MiB | peak RSS before MiB | now MiB (bank in) | now / before | "
        "on disk MiB | on disk / before | seconds before / now / on disk |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        before, now, disk = (row.get(name, (float("nan"),) * 2) for name in ("before", "now", "disk"))
        print(
            f"| {row['tokens']} | {row['blocks']} | {row['bank']:.0f} | {before[0]:.0f} | {now[0]:.0f} "
            f"({row['where']}) | {now[0] / before[0]:.2f} | {disk[0]:.0f} | {disk[0] / before[0]:.2f} | "
            f"{before[1]:.0f} / {now[1]:.0f} / {disk[1]:.0f} |"
        )


if __name__ == "__main__":
    main()
