"""A service's frequently asked questions (a held-out genre): question and answer pairs under topic headings.
Facts: how long something is kept (a duration), what a plan costs (a price, beside another price), who deals with
something (a name, beside another), which file to upload (a file name)."""

from . import words
from .base import Kind, Plan

_SERVICES = [
    "Cloud Backup", "Payroll", "Parking Permits", "Bike Hire", "Library Card", "Home Energy", "Tenant Portal",
    "Broadband", "Event Tickets", "Online Banking",
]  # fmt: skip
_RECORDS = [
    "deleted files", "daily snapshots", "audit logs", "old invoices", "chat transcripts", "support tickets",
    "call recordings", "login histories", "expired permits", "payment records", "uploaded photos",
    "cancelled bookings",
]  # fmt: skip
_OFFERS = [
    "Starter plan", "Team plan", "Business plan", "Family plan", "Student plan", "Charity plan", "Premium plan",
    "extra storage add-on", "priority support add-on", "second vehicle permit", "annual pass", "visitor pass",
]  # fmt: skip
_MATTERS = [
    "billing disputes", "accessibility requests", "data export requests", "lost passwords on shared accounts",
    "complaints about staff", "refund requests", "partnership proposals", "bulk orders", "security reports",
    "school visits", "lost items", "account transfers",
]  # fmt: skip
_UPLOADS = [
    "a bulk import of users", "restoring a snapshot", "proof of address", "a change of bank details",
    "importing contacts", "a group booking", "a tax summary request", "moving from another provider",
]  # fmt: skip
_FILE_STEMS = [
    "users", "import", "snapshot", "restore", "address", "proof", "bank", "details", "contacts", "group",
    "booking", "tax", "summary", "transfer", "template", "form",
]  # fmt: skip
_TEAMS = ["customer care", "billing", "accounts", "privacy", "partnerships", "operations"]
_HEADINGS = ["Billing", "Your account", "Data and privacy", "Getting help", "Files and uploads", "Plans and prices"]
_GENERAL = [
    ("Can I change my username on {service}?", "Yes: open Settings in {service} and choose a new name."),
    ("Is {service} available on mobile?", "Yes, {service} works in any modern browser and in our app."),
    ("How do I close my {service} account?", "Go to Settings, then Account, and follow the steps; we confirm it."),
    ("Does {service} work offline?", "Some pages of {service} work offline; changes are saved when you reconnect."),
    ("Where can I see the status of {service}?", "The status page of {service} shows incidents and planned work."),
    ("Can two people share one {service} account?", "No; each person needs their own {service} login."),
    ("Is my data safe with {service}?", "{service} encrypts your data in transit and at rest."),
]
_FOLLOW_UPS = [
    "You can check this in the Settings page of {service}.",
    "The {help} has more detail on this.",
    "This applies to every {service} account.",
    "",
    "",
]


def _retention(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    def period() -> str:
        return words.quantity(plan.rng, 2, 99, plan.rng.choice(["days", "weeks", "months"]))

    answer, other = plan.two(period)
    return {"answer": answer, "other": other}


def _price(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = sorted(plan.prices(2, 400), key=lambda price: float(price[1:].replace(",", "")), reverse=True)
    return {"answer": answer, "other": other}


def _contact(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    return {"answer": answer, "other": other, "team": plan.rng.choice(_TEAMS)}


def _upload(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.files(_FILE_STEMS, ["csv", "pdf", "xlsx", "json", "zip"])
    return {"answer": answer, "other": other}


def _capitalised(phrases: list[str], faq: list[str]) -> tuple[dict[str, str], ...]:
    return tuple(
        {"subject": phrase, "subject_capitalised": phrase[:1].upper() + phrase[1:], "faq": faq[index % len(faq)]}
        for index, phrase in enumerate(phrases)
    )


RETENTION = Kind(
    "retention",
    (
        "A: {service} keeps {subject} for {answer}, or for {other} on a Business account.",
        "A: We hold {subject} for {answer}; after that they sit in cold storage for another {other}.",
        "A: {subject_capitalised} are kept for {answer} (the legal minimum is {other}).",
    ),
    (
        "For how long does {service} keep {subject}?",
        "How long are {subject} kept?",
        "What is the retention period for {subject} at {service}?",
    ),
    _capitalised(_RECORDS, ["How long do you keep {subject}?", "What happens to {subject} after a while?"]),
    _retention,
)
PRICE = Kind(
    "price",
    (
        "A: The {subject} costs {answer} a month, or {other} a month if you pay for a year at once.",
        "A: You pay {answer} per month for the {subject}; the first month is {other}.",
        "A: It is {answer} a month for the {subject} ({other} before the last price change).",
    ),
    (
        "How much does the {subject} cost per month?",
        "What is the monthly price of the {subject}?",
        "What does the {subject} of {service} cost each month?",
    ),
    _capitalised(_OFFERS, ["What does the {subject} cost?", "Is the {subject} worth it?"]),
    _price,
)
CONTACT = Kind(
    "contact",
    (
        "A: {answer} in the {team} team deals with {subject}; {other} covers everything else.",
        "A: Write to {answer} about {subject}. {other} handled them until last year and no longer does.",
        "A: {subject_capitalised} are handled by {answer}, with {other} as backup.",
    ),
    (
        "Who deals with {subject}?",
        "Whom should I contact about {subject}?",
        "Which person at {service} handles {subject}?",
    ),
    _capitalised(_MATTERS, ["Who do I contact about {subject}?", "Where do {subject} go?"]),
    _contact,
)
UPLOAD = Kind(
    "upload",
    (
        "A: Upload {answer} for {subject}; {other} is only accepted for older accounts.",
        "A: For {subject} we need {answer}. Please do not send {other}, which we cannot read.",
        "A: Use the template {answer} when asking for {subject} ({other} is the old template).",
    ),
    (
        "Which file should be uploaded for {subject}?",
        "What file does {service} need for {subject}?",
        "Which template is used for {subject}?",
    ),
    _capitalised(_UPLOADS, ["What do I upload for {subject}?", "Which file format do you accept for {subject}?"]),
    _upload,
)


class FaqPlan(Plan):
    kinds = (RETENTION, PRICE, CONTACT, UPLOAD)

    def topic(self) -> dict[str, str]:
        service = f"{self.rng.choice(words.EMBLEMS)} {self.rng.choice(_SERVICES)}"
        return {"service": service, "help": f"{service} Help Centre"}

    def setup(self) -> None:
        self.updated = words.date(self.rng, "long")

    def header(self) -> str:
        service = self.slots["service"]
        return (
            f"{service}: frequently asked questions\n\nAnswers to the questions customers of {service} ask most "
            f"often. Last updated {self.updated}. If your question is not here, contact the {self.slots['help']}."
        )

    def section(self, number: int, gold: bool) -> str:
        kind = next(k for k in self.kinds if k.name == self.gold.kind) if gold else self.rng.choice(self.kinds)
        if gold:
            subject, fact = self.gold_subject(), self.gold.text
        else:
            subject, fact = self.entry(kind)
        follow_up = self.rng.choice(_FOLLOW_UPS).format(**self.slots)
        lines = [f"Q: {subject['faq'].format(**subject)}", f"{fact} {follow_up}".rstrip()]
        if self.rng.random() < 0.4:
            question, answer = self.rng.choice(_GENERAL)
            lines += ["", f"Q: {question.format(**self.slots)}", f"A: {answer.format(**self.slots)}"]
        if number % 4 == 1:
            lines[:0] = [f"## {_HEADINGS[number // 4 % len(_HEADINGS)]} ({self.slots['help']})", ""]
        return "\n".join(lines)

    def closing(self) -> list[str]:
        service = self.slots["service"]
        return [
            f"Still need help? The {self.slots['help']} answers messages every working day.",
            f"Prices and periods on this page apply to {service} customers in the United Kingdom.",
            f"We review these questions about {service} every quarter and add new ones as they come in.",
            f"Terms of use of {service} take precedence over this page where they differ.",
        ] * 3
