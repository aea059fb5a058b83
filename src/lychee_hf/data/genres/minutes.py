"""Meeting minutes (a training genre): a project board's minutes, with the people present, numbered agenda items,
decisions and actions. Facts: who acts as interim post holder (a name), which budget was approved (an amount), when
a deliverable is due (a date), which firm won a contract (a name)."""

from . import words
from .base import Kind, Plan, subjects

_PROJECTS = [
    "Bridge Refurbishment", "Depot Relocation", "Records Digitisation", "Library Extension", "Fleet Replacement",
    "Water Main Renewal", "Clinic Expansion", "Campus Heating Upgrade", "Museum Redevelopment",
    "Flood Defence Scheme", "Harbour Wall Repair", "School Rebuild",
]  # fmt: skip
_BOARD_ROLES = ["Chair", "Secretary", "Project Sponsor", "Senior User", "Senior Supplier", "Project Manager"]
_ROLES = [
    "Health and Safety Lead", "Finance Lead", "Communications Lead", "Procurement Manager", "Site Manager",
    "Design Lead", "Risk Manager", "Quality Lead", "Estates Manager", "Legal Adviser", "Data Protection Officer",
    "Sustainability Lead", "Community Liaison Officer", "Commercial Manager", "Transport Planner", "Digital Lead",
    "Heritage Adviser", "Access Officer", "Planning Consultant", "Cost Controller",
]  # fmt: skip
_LINES = [
    "capital", "operating", "maintenance", "contingency", "training", "communications", "survey", "consultancy",
    "equipment", "furniture",
]  # fmt: skip
_DELIVERABLES = [
    "revised risk register", "updated cost plan", "traffic management plan", "asbestos survey report",
    "stakeholder briefing note", "draft tender pack", "lessons learned log", "site access schedule",
    "heritage impact statement", "drainage design", "community newsletter", "fire strategy", "benefits profile",
    "resource plan", "handover checklist", "noise monitoring report",
]  # fmt: skip
_PACKAGES = [
    "scaffolding", "site security", "traffic management", "structural monitoring", "asbestos removal",
    "landscaping", "catering", "waste removal", "signage", "CCTV maintenance", "tree surgery", "roofing repairs",
    "lift maintenance", "pest control", "window replacement", "ground investigation",
]  # fmt: skip
_HEADINGS = [
    "Progress report", "Finance", "Health and safety", "Procurement", "Risks and issues", "Communications",
    "Programme", "Design", "Staffing", "Stakeholders", "Quality", "Any other business",
]  # fmt: skip
_REMARKS = [
    "{member} gave an update on the {topic}.",
    "The board noted the {topic} highlight report.",
    "{member} said that work on the {topic} remained on programme.",
    "There were no questions on this item.",
    "{member} asked that the {short} risk register be updated before the next meeting.",
    "The {board} discussed the update from {member} in detail.",
    "It was agreed to return to this item at the next meeting of the {board}.",
    "{member} thanked the {short} team for their work.",
    "{member} reminded the board that the {topic} must stay within its agreed scope.",
]


def _people(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    return {"answer": answer, "other": other, "date": plan.date(), "firm": plan.firm()}


def _budget(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.amounts(20_000, 2_500_000, step=1_000)
    return {"answer": answer, "other": other, "person": plan.member()}


def _deadline(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.dates()
    return {"answer": answer, "other": other, "person": plan.member(), "person2": plan.member()}


def _award(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.two(lambda: words.firm(plan.rng))
    return {"answer": answer, "other": other, "person": plan.member()}


INTERIM = Kind(
    "interim",
    (
        "{answer} will act as interim {subject} from {date}, supported by {firm}, until {other} returns.",
        "The board agreed that {answer} would cover the {subject} role from {date} while {other} is on leave, with "
        "support from {firm}.",
        "With {other} on leave from {date}, the interim {subject} will be {answer}; {firm} will help with the "
        "handover.",
    ),
    (
        "Who will act as interim {subject}?",
        "Who was named interim {subject} at the {board} meeting?",
        "Which person covers the {subject} role while the post holder is on leave?",
        "Who is the interim {subject} of the {topic}?",
    ),
    subjects(*_ROLES),
    _people,
)
BUDGET = Kind(
    "budget",
    (
        "The board approved the {subject} at {answer}, against the {other} requested by {person}.",
        "{person} had asked for {other}; the board approved {answer} as the {subject}.",
        "After discussion the {subject} was set at {answer}, down from {other} in the first draft.",
    ),
    (
        "What {line} budget did the meeting approve for {year}?",
        "How much did the board approve as the {subject}?",
        "What is the approved {subject} of the {topic}?",
    ),
    tuple(
        {"subject": f"{line} budget for {year}", "line": line, "year": year}
        for line in _LINES
        for year in ("2025", "2026", "2027", "2028")
    ),
    _budget,
)
DEADLINE = Kind(
    "deadline",
    (
        "Action: {person} to circulate the {subject} by {answer}; the first draft had been due on {other}.",
        "{person} will send the {subject} to the board by {answer}, and {person2} will comment on it by {other}.",
        "The {subject} is now due on {answer}, moved from {other} at the request of {person}.",
    ),
    (
        "By what date is the {subject} due?",
        "When must the {subject} be circulated to the board?",
        "What is the deadline for the {subject}?",
    ),
    subjects(*_DELIVERABLES),
    _deadline,
)
AWARD = Kind(
    "award",
    (
        "The contract for {subject} was awarded to {answer}; {other} came second on price.",
        "{person} reported that {answer} had won the {subject} contract, ahead of {other}.",
        "The board chose {answer} over {other} for the {subject} package.",
    ),
    (
        "Which firm won the contract for {subject}?",
        "Who was awarded the {subject} contract?",
        "Which company will carry out the {subject} work on the {topic}?",
    ),
    subjects(*_PACKAGES),
    _award,
)


class MinutesPlan(Plan):
    kinds = (INTERIM, BUDGET, DEADLINE, AWARD)

    def topic(self) -> dict[str, str]:
        emblem = self.rng.choice(words.EMBLEMS)
        topic = f"{emblem} {self.rng.choice(_PROJECTS)}"
        return {"topic": topic, "board": f"{topic} Project Board", "short": emblem}

    def setup(self) -> None:
        size, cast = self.rng.randint(6, 9), []
        while len(cast) < size:
            name = words.person(self.rng)
            if name not in cast:
                cast.append(name)
        self.cast = cast
        self.meeting = words.date(self.rng, "day")
        self.venue = f"the {self.rng.choice(words.PLACES)} Room, {self.rng.choice(words.PLACES)} House"

    def member(self) -> str:
        return self.rng.choice(self.cast)

    def header(self) -> str:
        present = ", ".join(f"{name} ({role})" for name, role in zip(self.cast, _BOARD_ROLES))
        others = self.cast[len(_BOARD_ROLES) :]
        lines = [
            f"{self.slots['board'].upper()}",
            f"Minutes of the meeting held on {self.meeting} in {self.venue}",
            f"Present: {present}",
        ]
        if others:
            lines.append(f"In attendance: {', '.join(others)}")
        return "\n".join(lines)

    def section(self, number: int, gold: bool) -> str:
        facts = [self.fact(self.rng.choice(self.kinds)) for _ in range(self.rng.randint(1, 2) if gold else 2)]
        if gold:
            facts.insert(self.rng.randint(0, len(facts)), self.gold.text)
        remarks = [self._remark() for _ in range(self.rng.randint(1, 2))]
        body = " ".join([remarks[0], *facts, *remarks[1:]]).replace(" Action: ", "\nAction: ")
        lines = [f"{number}. {self.rng.choice(_HEADINGS)}", body]
        if number % 3 == 0:
            lines.insert(0, f"{self.slots['board']} | Minutes of {self.meeting} | Page {number // 3 + 1}")
        return "\n".join(lines)

    def _remark(self) -> str:
        return self.rng.choice(_REMARKS).format(member=self.member(), **self.slots)

    def closing(self) -> list[str]:
        return [
            f"There being no other business, the Chair closed the meeting of the {self.slots['board']}.",
            f"The date of the next meeting of the {self.slots['board']} will be confirmed by the Secretary.",
            f"These minutes of the {self.slots['board']} remain a draft until the board approves them.",
            f"Papers for the {self.slots['topic']} are kept by the project office and shared with every member.",
            f"Members were asked to send corrections to these minutes to the {self.slots['short']} project office.",
            f"The actions above were added to the {self.slots['topic']} action log after the meeting.",
        ] * 3
