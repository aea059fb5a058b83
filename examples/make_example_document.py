"""Writes examples/harbor_town.txt: a ~10K-token chronicle of an invented town with a few facts to ask about.

The filler is varied (seeded combinations of people, places, trades and years) so that the facts do not stand
out as the only distinct sentences. Run: `python examples/make_example_document.py`.
"""

import random
from pathlib import Path

from lychee_hf.data.narrative import chronicle_paragraph

FACTS = {
    # question: (sentence placed in the document, expected answer)
    "What is the name of the lighthouse keeper's cat?": (
        "The lighthouse keeper, Mara Quell, kept a grey cat named Biscuit that slept on the lamp room stairs.",
        "Biscuit",
    ),
    "In which year was the stone bridge over the Vell river finished?": (
        "The stone bridge over the Vell river was finished in the year 1784, after six winters of work.",
        "1784",
    ),
    "What colour was the door of the old customs house painted?": (
        "Everyone in town remembers that the door of the old customs house was painted bright green.",
        "green",
    ),
    "Who founded the Saltmarsh bakery?": (
        "The Saltmarsh bakery was founded by a widow called Odile Fennick, who baked rye bread at dawn.",
        "Odile Fennick",
    ),
}
FACT_DEPTHS = [0.62, 0.18, 0.41, 0.85]


def build(paragraphs: int = 95, seed: int = 7) -> str:
    rng = random.Random(seed)
    body = [chronicle_paragraph(rng) for _ in range(paragraphs)]
    for depth, (sentence, _) in sorted(zip(FACT_DEPTHS, FACTS.values()), reverse=True):
        index = int(depth * len(body))
        body[index] = body[index] + " " + sentence
    return "A Chronicle of Harrowgate Harbour\n\n" + "\n\n".join(body) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("harbor_town.txt")
    target.write_text(build())
    print(f"wrote {target}")
