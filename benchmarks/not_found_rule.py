"""How often the "not found" rule's subject-word test refuses answerable and unanswerable questions (no model).

    python benchmarks/not_found_rule.py                       # 2K and 8K, n=24 per task
    python benchmarks/not_found_rule.py --lengths 2k --n 48

The test (`evidence_lychee.lacks_subject`): a question is about something the document lacks when at least
`MISSING_SUBJECT_WORDS` of its subject words (not stop or framing words) never occur in the whole document. It reads
the text only, so its rates here are exactly what `answer_not_found` gets from it with any model; the names test
(a capitalised name or number that no read block contains) depends on which blocks were read and is measured with
the model by `answers_check.py` and `genres_check.py`. Rows: the training genres, the held-out genres and the
held-out fact families (the framing words were written after looking at the answerable questions of both genre
splits, so the held-out answerable column is not a clean held-out figure), each asked its own question (answerable)
and another subject of its kind (unanswerable). The answerable column is the price: refusals of questions the
document answers.
"""

import argparse
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from genres_check import wilson  # noqa: E402

from lychee_hf.data import TASKS, parse_length  # noqa: E402
from lychee_hf.data.genres import genres, make_genre_examples  # noqa: E402
from lychee_hf.data.relations import TRAIN  # noqa: E402
from lychee_hf.modeling.evidence_lychee import MISSING_SUBJECT_WORDS, document_stems, lacks_subject  # noqa: E402


def training_genres(unanswerable: bool):
    def make(tokenizer, length, n, seed=0):
        return make_genre_examples("genres", genres(TRAIN), tokenizer, length, n, seed, unanswerable)

    return make


PAIRS = {
    "training genres": (training_genres(False), training_genres(True)),
    "held-out genres": (TASKS["genres-heldout"], TASKS["genres-heldout-unanswerable"]),
    "held-out fact families": (TASKS["facts-heldout"], TASKS["facts-heldout-unanswerable"]),
}


def refused(example) -> bool:
    return lacks_subject(example.question, document_stems(example.context))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="2k,8k")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--model", help="tokenizer's checkpoint (lengths count its tokens; default: the default's)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from lychee_hf import register_auto_classes
    from lychee_hf.default_model import default_model_path

    register_auto_classes()
    tokenizer = AutoTokenizer.from_pretrained(args.model or default_model_path())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{now}, {platform.machine()}, subject words missing >= {MISSING_SUBJECT_WORDS}, seed 0\n")
    print("| questions | length | n | refused, answerable | refused, unanswerable |\n|---|---|---|---|---|")
    for name, (answerable, unanswerable) in PAIRS.items():
        for length in (parse_length(text) for text in args.lengths.split(",")):
            asked = [refused(example) for example in answerable(tokenizer, length, args.n, seed=0)]
            absent = [refused(example) for example in unanswerable(tokenizer, length, args.n, seed=0)]
            print(f"| {name} | {length // 1000}K | {args.n} | {wilson(sum(asked), len(asked))} | "
                  f"{wilson(sum(absent), len(absent))} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
