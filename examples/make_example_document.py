"""Writes examples/harbor_town.txt: a ~10K-token chronicle of an invented town with a few facts to ask about.

The filler is varied (seeded combinations of people, places, trades and years) so that the facts do not stand
out as the only distinct sentences. Run: `python examples/make_example_document.py`.
"""

import random
from pathlib import Path

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

PEOPLE = [
    "a fisherman",
    "the miller",
    "two sisters",
    "a travelling tinker",
    "the schoolmaster",
    "a young sailor",
    "the harbour master",
    "an old weaver",
    "the blacksmith",
    "a merchant from the south",
    "the vicar",
    "a rope maker",
    "the ferryman",
    "a shepherd",
    "the town clerk",
    "a net mender",
]
PLACES = [
    "the north quay",
    "the market square",
    "the chapel on the hill",
    "the salt flats",
    "the ropewalk",
    "the herring sheds",
    "the coaching inn",
    "the mill pond",
    "the east gate",
    "the fish market",
    "the boatyard",
    "the tide mill",
    "the sea wall",
    "the town hall",
    "the orchard lane",
    "the dunes",
]
DEEDS = [
    "mended the nets after a storm",
    "argued about the price of salt",
    "planted a row of apple trees",
    "repaired the roof before winter",
    "sold barrels of smoked herring",
    "carried letters to the next village",
    "organised a small fair",
    "rebuilt a collapsed wall",
    "painted the shutters blue",
    "dug a new well",
    "counted the boats returning at dusk",
    "traded wool for lamp oil",
    "kept a record of the tides",
    "taught the children to read",
    "lost a cart wheel in the mud",
    "brewed cider from windfall apples",
]
WEATHER = [
    "a wet spring",
    "a long dry summer",
    "a bitter winter",
    "an autumn of gales",
    "a mild season",
    "weeks of sea fog",
    "an early frost",
    "a warm and quiet year",
]
REMARKS = [
    "Nobody wrote down what happened next.",
    "The town talked about it for weeks.",
    "It was recorded in the parish book.",
    "Few people remember the details now.",
    "The harbour was busy that year.",
    "Prices rose and then fell again.",
    "Visitors came from the inland farms.",
    "The church bell was rung twice that evening.",
]


def paragraph(rng: random.Random) -> str:
    year = rng.randint(1700, 1899)
    sentences = [
        f"In {year}, during {rng.choice(WEATHER)}, {rng.choice(PEOPLE)} {rng.choice(DEEDS)} near {rng.choice(PLACES)}."
    ]
    for _ in range(rng.randint(3, 5)):
        sentences.append(f"Later, {rng.choice(PEOPLE)} {rng.choice(DEEDS)} by {rng.choice(PLACES)}.")
    sentences.append(rng.choice(REMARKS))
    return " ".join(sentences)


def build(paragraphs: int = 95, seed: int = 7) -> str:
    rng = random.Random(seed)
    body = [paragraph(rng) for _ in range(paragraphs)]
    for depth, (sentence, _) in sorted(zip(FACT_DEPTHS, FACTS.values()), reverse=True):
        index = int(depth * len(body))
        body[index] = body[index] + " " + sentence
    return "A Chronicle of Harrowgate Harbour\n\n" + "\n\n".join(body) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("harbor_town.txt")
    target.write_text(build())
    print(f"wrote {target}")
