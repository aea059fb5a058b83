"""Host memory stays bounded when a tiny model compresses and answers over a 1M-token document.

    python benchmarks/scale_1m.py [--lengths 64k,1m]

For each length, in a fresh process: generate a needle-in-a-haystack document, compress it straight to a bank on
disk (`compress_to_disk`, a few chunks at a time), reopen the bank lazily and answer with blocks streamed one at a
time. Prints peak RSS per phase; the first length is the baseline the ratios refer to.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUN = """
import json, resource, sys, tempfile, time, torch
sys.path.insert(0, sys.argv[2])
from lychee_hf.testing import tiny_backbone, tiny_tokenizer
from lychee_hf import LycheeMemoryBank, LycheeMemoryForCausalLM
from lychee_hf.bank_tools import compress_to_disk
from lychee_hf.data import make_niah
from transformers import GenerationConfig

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

tokenizer = tiny_tokenizer()
model = LycheeMemoryForCausalLM.from_backbone(tiny_backbone("llama"), tokenizer, chunk_size=4096,
                                              compression_window=2048, memory_budget=16, compress_batch_size=2)
example = make_niah(tokenizer, int(sys.argv[1]), 1, seed=2)[0]
ids = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
question = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)])
del example
after_setup = rss()
with tempfile.TemporaryDirectory() as folder:
    started = time.perf_counter()
    compress_to_disk(model, ids, folder, chunks_per_write=8, show_progress=False)
    compress_seconds, after_compress = time.perf_counter() - started, rss()
    bank = LycheeMemoryBank.from_pretrained(folder)
    fixed = GenerationConfig(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    started = time.perf_counter()
    model.generate(input_ids=question, memory=bank, generation_config=fixed, memory_generation_config=fixed,
                   show_progress=False)
    answer_seconds, after_answer = time.perf_counter() - started, rss()
    disk = sum(p.stat().st_size for p in __import__("pathlib").Path(folder).iterdir())
print(json.dumps({"tokens": ids.shape[1], "blocks": len(bank), "setup_mib": after_setup, "compress_mib": after_compress,
                  "answer_mib": after_answer, "compress_s": compress_seconds, "answer_s": answer_seconds,
                  "bank_mib": disk / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="64k,1m")
    args = parser.parse_args()
    from lychee_hf.data import parse_length

    tests = str(Path(__file__).parents[1] / "tests")
    rows = []
    for length in [parse_length(text) for text in args.lengths.split(",")]:
        out = subprocess.run([sys.executable, "-c", RUN, str(length), tests], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(
        "| tokens | blocks | bank on disk MiB | peak RSS after setup | after compress | after answer |"
        " answer RSS vs first | compress s | answer s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tokens']} | {r['blocks']} | {r['bank_mib']:.0f} | {r['setup_mib']:.0f} | {r['compress_mib']:.0f} | "
            f"{r['answer_mib']:.0f} | {r['answer_mib'] / base['answer_mib']:.2f} | {r['compress_s']:.1f} | "
            f"{r['answer_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
