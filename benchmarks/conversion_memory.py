"""Peak host memory of converting a sharded authors'-format checkpoint, against the checkpoint's own size.

    python benchmarks/conversion_memory.py [--layers 16] [--hidden 1024] [--shards 4]

Builds a random checkpoint in the authors' layout (sharded safetensors), converts it in a fresh process and
reads that process's peak RSS (`ru_maxrss`). A converter that held the model twice would show a peak above twice
the checkpoint size; the baseline row is a process that only imports lychee_hf and torch.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each step runs in its own interpreter: Linux carries ru_maxrss across fork/exec, so this parent must stay small.
WRITE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from authors_checkpoint import write_authors_checkpoint
write_authors_checkpoint(sys.argv[2], shards=int(sys.argv[3]), dims=json.loads(sys.argv[4]))
"""
CONVERT = """
import resource, sys
from lychee_hf.convert_reference import convert_reference_checkpoint
if sys.argv[1] != "-":
    convert_reference_checkpoint(sys.argv[1], sys.argv[2], max_shard_bytes=int(sys.argv[3]), memory_budget=16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(*args: str) -> tuple[float, float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CONVERT, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    dims = {"hidden": args.hidden, "layers": args.layers, "heads": 16, "kv_heads": 4, "intermediate": 4 * args.hidden}
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "src"
        tests = str(Path(__file__).parents[1] / "tests")
        subprocess.run(
            [sys.executable, "-c", WRITE, tests, str(source), str(args.shards), json.dumps(dims)], check=True
        )
        size = sum(p.stat().st_size for p in source.glob("*.safetensors")) / 2**20
        baseline, _ = peak_rss_mib("-")
        peak, seconds = peak_rss_mib(str(source), str(Path(scratch) / "out"), str(int(size * 2**20 // args.shards)))
    print("| measure | MiB | x checkpoint |\n|---|---|---|")
    print(f"| checkpoint size ({args.shards} shards, fp32) | {size:.0f} | 1.00 |")
    print(f"| baseline process (imports only) | {baseline:.0f} | {baseline / size:.2f} |")
    print(f"| conversion peak RSS ({seconds:.1f} s) | {peak:.0f} | {peak / size:.2f} |")
    print(f"| conversion peak above baseline | {peak - baseline:.0f} | {(peak - baseline) / size:.2f} |")


if __name__ == "__main__":
    main()
