"""An e-mail thread (a training genre): messages with headers, greetings and sign-offs, all about one project.
Facts: when an item will arrive (a date), who handles something now (a name), which file holds a document (a file
name), which room is booked for an event (a term)."""

import datetime

from . import words
from .base import Kind, Plan, subjects

_PROJECTS = [
    "Office Move", "System Migration", "Warehouse Fit-Out", "Annual Conference", "Records Audit", "Depot Opening",
    "Website Relaunch", "Lab Refurbishment", "Payroll Changeover", "Branch Opening",
]  # fmt: skip
_THREADS = ["next steps", "open points", "planning", "this week", "handover", "status", "logistics"]
_ITEMS = [
    "replacement pumps", "signage panels", "server racks", "printed handbooks", "site cabins", "new laptops",
    "meeting room screens", "storage cages", "standing desks", "radio handsets", "fire doors", "kitchen units",
    "solar panels", "label printers", "lockers", "shelving units",
]  # fmt: skip
_DUTIES = [
    "supplier invoices", "site access requests", "press enquiries", "the weekly progress report",
    "permit applications", "timesheets", "insurance claims", "visitor passes", "parking permits", "room bookings",
    "purchase orders", "expense claims", "IT tickets", "the risk log",
]  # fmt: skip
_DOCUMENTS = [
    "revised programme", "signed variation order", "snagging list", "cost report", "floor plans", "seating plan",
    "risk assessment", "delivery schedule", "test results", "budget tracker", "contact sheet", "training slides",
]  # fmt: skip
_FILE_STEMS = [
    "programme", "variation", "snagging", "costs", "floorplan", "seating", "risks", "deliveries", "tests",
    "budget", "contacts", "slides", "final", "draft", "signed", "rev", "issue", "tracker",
]  # fmt: skip
_EVENTS = [
    "site walkround", "supplier workshop", "lessons learned session", "budget review", "fire drill briefing",
    "handover meeting", "induction session", "design review", "all-staff briefing", "training day",
    "steering group", "kick-off meeting",
]  # fmt: skip
_OPENINGS = [
    "Just a quick update on the {topic}.",
    "Following on from my last e-mail about the {topic}, a few points.",
    "Thanks for the call this morning about the {topic}.",
    "Picking up the open points on the {topic} from yesterday.",
    "Here is where we are on the {topic}.",
]
_CLOSINGS = [
    "Let me know if anything on the {topic} is unclear.",
    "I will update the {short} tracker tonight.",
    "Shout if I have missed anything for the {topic}.",
    "I will bring this up at the {short} catch-up on Thursday.",
    "Copying the {short} team so everyone has the latest.",
]
_SIGN_OFFS = ["Thanks", "Best regards", "Many thanks", "Kind regards", "Cheers", "Best"]


def _delivery(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.dates()
    return {"answer": answer, "other": other, "person": plan.member()}


def _cover(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    return {"answer": answer, "other": other}


def _attachment(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.files(_FILE_STEMS, ["pdf", "xlsx", "docx", "pptx", "csv"])
    return {"answer": answer, "other": other, "person": plan.member()}


def _room(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.two(lambda: f"Room {plan.rng.choice('G123456')}.{plan.rng.randint(1, 40):02d}")
    return {"answer": answer, "other": other, "person": plan.member()}


DELIVERY = Kind(
    "delivery",
    (
        "The {subject} for the {topic} will now arrive on {answer}, not {other} as {person} said last week.",
        "{person} confirmed that the {subject} ship on {answer}; the earlier slot on {other} fell through.",
        "Delivery of the {subject} has moved to {answer} (it was {other}).",
    ),
    (
        "When will the {subject} arrive?",
        "On what date are the {subject} now expected?",
        "What is the new delivery date for the {subject} of the {topic}?",
    ),
    subjects(*_ITEMS),
    _delivery,
)
COVER = Kind(
    "cover",
    (
        "While I am away, {answer} will handle {subject}; {other} remains the contact for everything else.",
        "Please send {subject} to {answer} from Monday, not to {other}.",
        "{other} has handed {subject} over to {answer}.",
    ),
    (
        "Who will handle {subject}?",
        "To whom should {subject} be sent now?",
        "Who took over {subject} on the {topic}?",
    ),
    subjects(*_DUTIES),
    _cover,
)
ATTACHMENT = Kind(
    "attachment",
    (
        "I attach {answer} with the {subject}; please ignore {other}, which is out of date.",
        "The current version of the {subject} is in {answer}, not {other}.",
        "{person} saved the {subject} as {answer} and removed {other} from the shared drive.",
    ),
    (
        "Which file holds the current {subject}?",
        "What is the file name of the latest {subject}?",
        "In which attachment is the {subject} of the {topic}?",
    ),
    subjects(*_DOCUMENTS),
    _attachment,
)
ROOM = Kind(
    "room",
    (
        "We have booked {answer} for the {subject}; {other} was unavailable.",
        "The {subject} will be in {answer} instead of {other}.",
        "{person} moved the {subject} from {other} to {answer}.",
    ),
    (
        "Which room is booked for the {subject}?",
        "Where will the {subject} take place?",
        "In which room is the {subject} for the {topic}?",
    ),
    subjects(*_EVENTS),
    _room,
)


class EmailPlan(Plan):
    kinds = (DELIVERY, COVER, ATTACHMENT, ROOM)

    def topic(self) -> dict[str, str]:
        emblem = self.rng.choice(words.EMBLEMS)
        topic = f"{emblem} {self.rng.choice(_PROJECTS)}"
        return {"topic": topic, "short": emblem, "thread": f"{topic}: {self.rng.choice(_THREADS)}"}

    def setup(self) -> None:
        size, self.cast = self.rng.randint(4, 7), []
        while len(self.cast) < size:
            name = words.person(self.rng)
            if name not in self.cast:
                self.cast.append(name)
        domains = [f"{self.rng.choice(words.PLACES).lower()}-{kind}.example" for kind in ("group", "works")]
        self.addresses = {name: f"{name.lower().replace(' ', '.')}@{self.rng.choice(domains)}" for name in self.cast}
        first = datetime.datetime(self.rng.randint(*words.YEARS), self.rng.randint(1, 12), 1, 8, 0)
        self.clock = first + datetime.timedelta(minutes=self.rng.randint(0, 40_000))

    def member(self) -> str:
        return self.rng.choice(self.cast)

    def header(self) -> str:
        return f"Thread: {self.slots['thread']}\nParticipants: {', '.join(self.cast)}"

    def section(self, number: int, gold: bool) -> str:
        sender, recipient = self.rng.sample(self.cast, 2)
        self.clock += datetime.timedelta(minutes=self.rng.randint(20, 3000))
        lines = [
            f"From: {sender} <{self.addresses[sender]}>",
            f"To: {recipient} <{self.addresses[recipient]}>",
            f"Date: {self.clock:%a, %d %b %Y %H:%M}",
            f"Subject: {'Re: ' if number > 1 else ''}{self.slots['thread']}",
        ]
        facts = [self.fact(self.rng.choice(self.kinds)) for _ in range(self.rng.randint(1, 2) if gold else 2)]
        if gold:
            facts.insert(self.rng.randint(0, len(facts)), self.gold.text)
        body = [self.rng.choice(_OPENINGS).format(**self.slots), *facts]
        if self.rng.random() < 0.6:
            body.append(self.rng.choice(_CLOSINGS).format(**self.slots))
        greeting = f"Hi {recipient.split()[0]},"
        sign_off = f"{self.rng.choice(_SIGN_OFFS)},\n{sender.split()[0]}"
        text = " ".join(body)
        return "\n".join(lines) + f"\n\n{greeting}\n\n{text}\n\n{sign_off}"

    def closing(self) -> list[str]:
        return [
            f"This e-mail about the {self.slots['topic']} and any attachments are for the named recipients only.",
            "If you received it in error, please tell the sender and delete it.",
            f"Replies to this thread are filed with the {self.slots['topic']} project records.",
            f"Please keep the subject line so that the {self.slots['short']} team can follow the thread.",
        ] * 3
