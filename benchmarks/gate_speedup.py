"""Trained gate vs no gate: the same questions over the same banks, in one process.

    python benchmarks/gate_speedup.py --model DIR_WITH_GATE_ADAPTER --task niah --length 4k --n 8

`DIR_WITH_GATE_ADAPTER` is what `lychee-hf train-gate --out DIR` writes. Each document is compressed once; then
every question is answered twice from the same bank: with the classifier gate (the `gate` adapter, the
checkpoint's threshold) and with every block read (`always_related`). The table gives wall time of the reasoning
(gate + memory updates + answer; compression excluded, it is shared), blocks read, the gate's precision and
recall against the supporting-passage labels, and sub-EM, with the ratio gate / no gate. Greedy decoding.
Generated examples use seed 5000, disjoint from train-gate's default (1000) and eval's (0).
"""

import argparse
import time

import torch
from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, parse_length, supporting_chunks
from lychee_hf.metrics import classification_metrics, score


def answer(model, tokenizer, bank, question: str) -> tuple[str, list, float]:
    ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
    started = time.perf_counter()
    out = model.generate(input_ids=ids, bank=bank, do_sample=False, return_dict_in_generate=True, show_progress=False)
    seconds = time.perf_counter() - started
    text = tokenizer.decode(out.sequences[0, ids.shape[1] :], skip_special_tokens=True)
    return text, out.trace[0], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint with a gate adapter (lychee-hf train-gate)")
    parser.add_argument("--task", default="niah", choices=sorted(TASKS))
    parser.add_argument("--length", default="4k")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args()

    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if model.config.gate_type != "classifier":
        raise SystemExit(f"{args.model} has gate_type={model.config.gate_type!r}: train a gate first.")
    examples = TASKS[args.task](tokenizer, parse_length(args.length), args.n, seed=args.seed)

    totals = {"gate": [0.0, 0, 0.0], "no gate": [0.0, 0, 0.0]}  # seconds, blocks read, sub-EM
    scores, labels, blocks = [], [], 0
    for example in examples:
        context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
        bank = model.compress(context, show_progress=False)
        related = set(supporting_chunks(example, tokenizer, model.config.chunk_size))
        blocks += len(bank)
        for name, gate_type in (("gate", "classifier"), ("no gate", "always_related")):
            model.set_gate(gate_type)
            text, trace, seconds = answer(model, tokenizer, bank, example.question)
            totals[name][0] += seconds
            totals[name][1] += sum(r.kept for r in trace)
            totals[name][2] += score(text, example.answers)["sub_em"] / len(examples)
            if name == "gate":
                scores += [r.gate_score for r in trace]
                labels += [int(r.block_index in related) for r in trace]
        model.set_gate("classifier")

    quality = classification_metrics(scores, labels, model.config.gate_threshold)
    device = "cuda" if model.device.type == "cuda" else "cpu"
    print(f"\n{args.task} at {args.length}, n={args.n}, {blocks} blocks, greedy, {device}, {torch.__version__}")
    print(f"{'method':<10}{'seconds':>10}{'blocks read':>13}{'sub-EM':>8}")
    for name, (seconds, read, accuracy) in totals.items():
        print(f"{name:<10}{seconds:>10.1f}{read:>13}{accuracy:>8.3f}")
    gate, none = totals["gate"], totals["no gate"]
    print(f"{'ratio':<10}{gate[0] / none[0]:>10.2f}{gate[1] / max(none[1], 1):>13.2f}")
    print(
        f"gate: skipped {1 - gate[1] / blocks:.1%} of blocks; precision {quality['precision']:.3f}, recall "
        f"{quality['recall']:.3f}, AUROC {quality['auroc']:.3f} (threshold {model.config.gate_threshold})"
    )


if __name__ == "__main__":
    main()
