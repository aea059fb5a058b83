"""The scale-out inference paths one after the other, for the multi-process tests:
`torchrun --nproc_per_node P tests/dist_scale.py --model CKPT --corpus DOCS.jsonl --questions Q.jsonl --out DIR`.

Compresses the corpus into DIR/banks, answers the questions into DIR/answers.jsonl (3 per batch), evaluates
generated niah examples into DIR/eval, and every process writes DIR/rank<r>.json (distributed type, processes).
The tests run the same `run_pipeline` in their own process for the one-process reference.
"""

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.eval.runner import EvalSettings, run_eval
from lychee_hf.scale import compress_corpus, distributed_state, place_model
from lychee_hf.scale.distributed import end_distributed
from lychee_hf.scale.questions import answer_questions

EVAL = dict(task="niah", lengths=[200], n=3, methods=["lychee", "memagent"], memagent_chunk_tokens=128)


def run_pipeline(model_path: Path, corpus: Path, questions: Path, out: Path) -> dict:
    state = distributed_state()
    model = place_model(LycheeMemoryForCausalLM.from_pretrained(model_path).eval(), state)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    corpus_summary = compress_corpus(model, tokenizer, corpus, out / "banks", state=state, show_progress=False)
    answer_questions(
        model, tokenizer, out / "banks", questions, out / "answers.jsonl", 3, state=state, show_progress=False
    )
    run_eval(model, tokenizer, EvalSettings(**EVAL), out / "eval", show_progress=False, state=state)
    return {
        "distributed_type": str(state.distributed_type),
        "num_processes": state.num_processes,
        "process_index": state.process_index,
        "compressed": corpus_summary.compressed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--model", "--corpus", "--questions", "--out"):
        parser.add_argument(name, required=True, type=Path)
    args = parser.parse_args()
    record = run_pipeline(args.model, args.corpus, args.questions, args.out)
    (args.out / f"rank{record['process_index']}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
    end_distributed()
