"""A services agreement (a held-out genre): parties, numbered clauses and sub-clauses in legal style, defined terms
in capitals. Facts: within how many days an invoice is paid (days), the cap on a liability (an amount), the notice
an event needs (days), who holds a named role for a party (a name)."""

from . import words
from .base import Kind, Plan, subjects

_SERVICES = [
    "Managed Hosting", "Facilities Management", "Software Support", "Cleaning", "Payroll", "Catering", "Security",
    "Fleet Maintenance", "Data Processing", "Consultancy",
]  # fmt: skip
_CUSTOMERS = ["Borough Council", "University", "Health Trust", "Housing Association", "College", "Water Company"]
_FEES = [
    "hosting fees", "support fees", "licence fees", "training courses", "on-site work", "data migration",
    "hardware purchases", "consultancy days", "travel expenses", "out-of-hours call-outs", "additional users",
    "change requests", "storage upgrades", "annual health checks",
]  # fmt: skip
_LIABILITIES = [
    "loss of data", "breach of confidentiality", "damage to property", "late delivery", "third-party claims",
    "regulatory fines", "service failures", "loss of revenue", "personal injury caused by negligence",
    "defective deliverables", "security incidents", "wrongful disclosure of personal data",
]  # fmt: skip
_EVENTS = [
    "termination for convenience", "a change of subcontractor", "a price increase", "relocation of the data centre",
    "a planned outage", "an audit visit", "assignment of this Agreement", "non-renewal", "a change of key personnel",
    "withdrawal of a service", "suspension of the Services", "a change to the security policy",
]  # fmt: skip
_ROLES = [
    "Contract Manager", "Data Protection Officer", "Security Lead", "Service Delivery Manager",
    "Escalation Manager", "Finance Contact", "Account Director", "Quality Representative",
]  # fmt: skip
_HEADINGS = [
    "PAYMENT", "LIABILITY", "TERMINATION", "NOTICES", "SERVICE LEVELS", "CONFIDENTIALITY", "DATA PROTECTION",
    "INTELLECTUAL PROPERTY", "INSURANCE", "SUBCONTRACTING", "FORCE MAJEURE", "AUDIT", "CHANGE CONTROL",
    "PERSONNEL", "DISPUTE RESOLUTION", "ASSIGNMENT", "WARRANTIES", "LICENCE", "GENERAL",
]  # fmt: skip
_BOILERPLATE = [
    "Each party shall perform its obligations under this {agreement} with reasonable skill and care.",
    "Nothing in this clause limits the rights of the Customer under the {agreement} or at law.",
    "The Supplier shall keep full and accurate records of the {services} and make them available on request.",
    "Any obligation in this {agreement} to do something includes an obligation to procure that it is done.",
    "The Supplier grants the Customer a non-exclusive licence to use the materials supplied with the {services} "
    "for the term of this {agreement}.",
    "Where the Customer reasonably requests, the Supplier shall provide a written report on the {services}.",
    "A reference to this {agreement} includes its schedules, as amended from time to time.",
    "The Supplier shall comply with all applicable laws in providing the {services}.",
    "Neither party shall be liable for any delay caused by events beyond its reasonable control.",
]


def _days(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = sorted(plan.quantities(5, 180, "days"), key=_number)  # the other period is the longer one
    return {"answer": answer, "other": other, "rate": str(plan.rng.randint(2, 8))}


def _cap(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = sorted(plan.amounts(10_000, 5_000_000, step=5_000), key=_number)  # the other cap is higher
    return {"answer": answer, "other": other}


def _number(value: str) -> int:
    return int("".join(character for character in value if character.isdigit()))


def _contact(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    return {"answer": answer, "other": other}


PAYMENT = Kind(
    "payment",
    (
        "The Customer shall pay invoices for {subject} within {answer} of receipt; disputed amounts are payable "
        "within {other} of their resolution.",
        "Invoices for {subject} fall due {answer} after the invoice date, or {other} after it for invoices issued "
        "in the last month of a Contract Year.",
        "Payment for {subject} shall be made within {answer}; sums unpaid after {other} bear interest at {rate} per "
        "cent a year above the base rate.",
    ),
    (
        "Within how many days must the Customer pay for {subject}?",
        "How long does the Customer have to pay invoices for {subject}?",
        "What is the payment term for {subject} under the {agreement}?",
    ),
    subjects(*_FEES),
    _days,
)
CAP = Kind(
    "cap",
    (
        "The Supplier's total liability for {subject} shall not exceed {answer} in any Contract Year, and {other} "
        "in aggregate over the term.",
        "Liability for {subject} is capped at {answer}, save that the cap rises to {other} once the Customer has "
        "renewed this {agreement}.",
        "In respect of {subject}, the Supplier's liability is limited to {answer} per claim and to {other} for all "
        "claims together.",
    ),
    (
        "What is the cap on the Supplier's liability for {subject}?",
        "Up to what amount is the Supplier liable for {subject}?",
        "How much can the Customer recover from the Supplier for {subject} under the {agreement}?",
    ),
    subjects(*_LIABILITIES),
    _cap,
)
NOTICE = Kind(
    "notice",
    (
        "Notice of {subject} shall be given not less than {answer} in advance, or {other} where the Customer is "
        "in material breach.",
        "A party intending {subject} shall give the other at least {answer} written notice; the other party may "
        "object within {other}.",
        "{subject_capitalised} requires {answer} written notice, extended to {other} during the first Contract Year.",
    ),
    (
        "How much notice is required for {subject}?",
        "What notice period applies to {subject}?",
        "How many days' notice must be given for {subject} under the {agreement}?",
    ),
    tuple({"subject": event, "subject_capitalised": event[:1].upper() + event[1:]} for event in _EVENTS),
    _days,
)
CONTACT = Kind(
    "contact",
    (
        "{subject_capitalised} is {answer}, or such other person as that party notifies in writing; {other} acts "
        "as deputy.",
        "For the purposes of this {agreement}, {answer} acts as {subject}, with {other} as alternate.",
        "{other} shall hand over the duties of {subject} to {answer} on the Effective Date.",
    ),
    (
        "Who is {subject}?",
        "Which person acts as {subject} under the {agreement}?",
        "Who holds the post of {subject}?",
    ),
    tuple(
        {"subject": f"the {party}'s {role}", "subject_capitalised": f"The {party}'s {role}"}
        for party in ("Supplier", "Customer")
        for role in _ROLES
    ),
    _contact,
)

# The clauses whose facts are of one kind; the others state facts of any kind among their general terms.
_CLAUSE_KINDS = {
    "PAYMENT": PAYMENT, "LIABILITY": CAP, "INSURANCE": CAP, "TERMINATION": NOTICE, "NOTICES": NOTICE,
    "CHANGE CONTROL": NOTICE, "PERSONNEL": CONTACT, "DATA PROTECTION": CONTACT,
}  # fmt: skip


class ContractPlan(Plan):
    kinds = (PAYMENT, CAP, NOTICE, CONTACT)

    def topic(self) -> dict[str, str]:
        services = f"{self.rng.choice(_SERVICES)} Services"
        return {"agreement": f"{services} Agreement", "services": services}

    def setup(self) -> None:
        self.supplier = words.firm(self.rng)
        self.customer = f"{self.rng.choice(words.PLACES)} {self.rng.choice(_CUSTOMERS)}"
        self.effective = words.date(self.rng, "long")
        self.reference = f"{self.rng.choice(words.EMBLEMS).upper()}/{self.rng.randint(100, 999)}"

    def header(self) -> str:
        agreement = self.slots["agreement"]
        return (
            f"{agreement.upper()}\nReference {self.reference}\n\nTHIS {agreement.upper()} is made on "
            f'{self.effective} (the "Effective Date") BETWEEN {self.supplier} (the "Supplier") AND '
            f'{self.customer} (the "Customer"). The Supplier shall provide the {self.slots["services"]} to the '
            f"Customer on the terms of this {agreement}."
        )

    def section(self, number: int, gold: bool) -> str:
        heading = _HEADINGS[(number - 1) % len(_HEADINGS)]
        if gold:
            heading = self.rng.choice([name for name, kind in _CLAUSE_KINDS.items() if kind.name == self.gold.kind])
        kind = _CLAUSE_KINDS.get(heading)
        clauses = [self.fact(kind or self.rng.choice(self.kinds)) for _ in range(self.rng.randint(1, 2) if kind else 1)]
        clauses += [text.format(**self.slots) for text in self.rng.sample(_BOILERPLATE, self.rng.randint(1, 2))]
        self.rng.shuffle(clauses)
        if gold:
            clauses.insert(self.rng.randint(0, len(clauses)), self.gold.text)
        lines = [f"{number}. {heading}"]
        lines += [f"{number}.{sub} {clause}" for sub, clause in enumerate(clauses, 1)]
        if number % 4 == 0:
            lines.append(f"[{self.reference}] {self.slots['agreement']} between {self.supplier} and {self.customer}")
        return "\n".join(lines)

    def closing(self) -> list[str]:
        agreement = self.slots["agreement"]
        return [
            f"This {agreement} may be executed in counterparts, each of which is an original.",
            f"This {agreement} is governed by the law of England and Wales.",
            f"The courts of England and Wales have exclusive jurisdiction over disputes arising from this {agreement}.",
            f"IN WITNESS of which the parties have signed this {agreement} on the date written above.",
            f"No variation of this {agreement} is effective unless it is in writing and signed by both parties.",
        ] * 3
