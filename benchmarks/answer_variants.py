"""Answer-turn variants on the questions of a `genres_check.py` log, from the same gate and evidence.

    python benchmarks/genres_check.py --lengths 2k --n 8 --out genres.jsonl     # the log (answers, evidence)
    python benchmarks/answer_variants.py genres.jsonl [more.jsonl ...] [--model PATH]

For every answerable question of the logs, the final answer turn (the reasoner's own prompt and adapter) is asked
again with the logged evidence passages (up to 3 quoted sentences from the blocks the reasoner read) in place of
the working memory, twice: decoding freely, and decoding under a copy constraint (a `LogitsProcessor` that only
lets the answer continue a token sequence of those passages, so names and numbers come out exactly as written).
The first row is the logged answer from the working memory. Sub-EM (the gold answer within the answer) and exact
match (after normalisation) with 95% Wilson intervals. Questions whose evidence misses the gold sentence stay in
the count: that is what a user gets.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).parent))
from genres_check import wilson  # noqa: E402

from lychee_hf.loading import load_pretrained  # noqa: E402
from lychee_hf.metrics import normalize_answer, substring_match  # noqa: E402
from lychee_hf.modeling import build_prompt, role_adapter, stop_and_pad_ids  # noqa: E402


class CopyFromSource(LogitsProcessor):
    """Lets each row only continue an occurrence of what it generated so far within `source` ids, or stop.

    Args:
        source (`list[int]`): the passages' token ids.
        prompt_length (`int`): where generation starts in `input_ids`.
        stop_ids (`list[int]`): ids that end the answer (allowed once something was copied).
    """

    def __init__(self, source: list[int], prompt_length: int, stop_ids: list[int]):
        self.source, self.prompt_length, self.stop_ids = source, prompt_length, stop_ids

    def allowed(self, generated: list[int]) -> set[int]:
        if not generated:
            return set(self.source)
        width = len(generated)
        starts = range(len(self.source) - width)
        follow = {self.source[i + width] for i in starts if self.source[i : i + width] == generated}
        return follow | set(self.stop_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            keep = torch.tensor(sorted(self.allowed(input_ids[row, self.prompt_length :].tolist())), dtype=torch.long)
            masked[row, keep] = scores[row, keep]
        return masked


def answer_from(model, tokenizer, question: str, passages: list[str], copy: bool) -> str:
    """The final answer turn with `passages` as the memory (greedy, the model's answer length)."""
    config = model.config
    question_ids = torch.tensor(tokenizer.encode(question, add_special_tokens=False), dtype=torch.long)
    source = tokenizer.encode(" ".join(passages), add_special_tokens=False)
    prompt = build_prompt(config.final_template_ids, question_ids, torch.tensor(source, dtype=torch.long))[None]
    stop_ids, _ = stop_and_pad_ids(model.generation_config)
    processors = LogitsProcessorList([CopyFromSource(source, prompt.shape[1], stop_ids)] if copy and source else [])
    with role_adapter(model, "reasoner"), torch.no_grad():
        output = GenerationMixin.generate(
            model,
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=config.max_answer_tokens,
            do_sample=False,
            logits_processor=processors,
        )
    return tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="genres_check.py --out logs")
    parser.add_argument("--model", help="checkpoint folder (default: the embedded default)")
    args = parser.parse_args()
    model, tokenizer = load_pretrained(args.model, quiet=True)
    rows = [json.loads(line) for log in args.logs for line in log.read_text(encoding="utf-8").splitlines()]
    variants = {"working memory (logged)": [], "evidence as memory": [], "evidence as memory, copy constraint": []}
    for row in rows:
        answers = [
            row.get("memory_answer", row["generated"]),  # logs before answer_from="evidence" lack the key
            answer_from(model, tokenizer, row["question"], row["evidence"], copy=False),
            answer_from(model, tokenizer, row["question"], row["evidence"], copy=True),
        ]
        for results, answer in zip(variants.values(), answers):
            results.append(
                (substring_match(answer, [row["gold"]]), normalize_answer(answer) == normalize_answer(row["gold"]))
            )
        print(json.dumps({"id": row["id"], "gold": row["gold"], "answers": answers}), file=sys.stderr, flush=True)
    print(f"{len(rows)} answerable questions from {', '.join(str(log) for log in args.logs)}\n")
    print("| answer turn | sub-EM | exact match |\n|---|---|---|")
    for name, results in variants.items():
        sub_em, exact = (sum(int(result[k]) for result in results) for k in (0, 1))
        print(f"| {name} | {wilson(sub_em, len(results))} | {wilson(exact, len(results))} |")


if __name__ == "__main__":
    main()
