"""Narrative filler: seeded paragraphs of a small town's chronicle (people, places, deeds, seasons, years).

Planted facts do not stand out as the only distinct sentences among these, unlike repeated filler lines. The example
document (`examples/make_example_document.py`) and tests that plant a fact in prose use it.
"""

import random

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


def chronicle_paragraph(rng: random.Random) -> str:
    """One paragraph of 5-7 sentences: a dated event, a few later ones, a closing remark."""
    year = rng.randint(1700, 1899)
    sentences = [
        f"In {year}, during {rng.choice(WEATHER)}, {rng.choice(PEOPLE)} {rng.choice(DEEDS)} near {rng.choice(PLACES)}."
    ]
    for _ in range(rng.randint(3, 5)):
        sentences.append(f"Later, {rng.choice(PEOPLE)} {rng.choice(DEEDS)} by {rng.choice(PLACES)}.")
    sentences.append(rng.choice(REMARKS))
    return " ".join(sentences)
