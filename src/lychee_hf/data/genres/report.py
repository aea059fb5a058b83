"""A quarterly report (a held-out genre): numbered sections with tables of sites (Markdown or plain-text columns),
bulleted figures and milestone paragraphs. Facts: a site's spend (an amount, in a table row that also gives its
budget), a site's manager (a name, beside the deputy's), a regional figure (a percentage, beside its target), when
a piece of work was completed (a date)."""

from . import words
from .base import Kind, Plan

_SERVICES = ["Estates Service", "Property Services", "Facilities Directorate", "Operations Division"]
_FACILITIES = [
    "depot", "clinic", "library", "pumping station", "warehouse", "office", "data centre", "laboratory", "workshop",
    "visitor centre", "leisure centre", "recycling centre",
]  # fmt: skip
_METRICS = [
    "on-time delivery", "customer satisfaction", "first-time fix rate", "staff turnover", "sickness absence",
    "complaints resolved within target", "energy use against baseline", "recycling rate",
    "repairs completed on first visit", "invoices paid on time",
]  # fmt: skip
_REGIONS = ["North", "South", "East", "West", "Central", "Coastal", "Highland", "Metro"]
_WORKS = [
    "upgrade of the booking system", "roll-out of the new telephony platform", "migration of the finance ledger",
    "refit of the fleet workshop", "replacement of the door entry system", "installation of heat pumps",
    "rewiring of the main office", "launch of the tenant portal", "resurfacing of the staff car park",
    "move to electronic timesheets", "review of lone working procedures", "renewal of the cleaning contract",
]  # fmt: skip
_THEMES = [
    "Operations", "Finance", "Customer service", "Facilities", "People", "Sustainability", "Assets", "Compliance",
    "Projects", "Performance",
]  # fmt: skip
_REMARKS = [
    "This section of the {report} covers {quarter}.",
    "Figures in the {report} are unaudited until year end.",
    "The {org} board reviewed these figures before this {report} was published.",
    "Comparisons are with the same quarter last year unless the {report} says otherwise.",
]
_COLUMNS = ["Manager", "Deputy", "Budget", "Spend"]
_WIDTHS = {"Site": 28, "Manager": 22, "Deputy": 22, "Budget": 14, "Spend": 14}
_MARKDOWN, _PLAIN = "markdown table row", "plain-text table row"


def _spend(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.amounts(5_000, 900_000)
    manager, deputy = plan.people()
    return {"answer": answer, "other": other, "Spend": answer, "Budget": other, "Manager": manager, "Deputy": deputy}


def _manager(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    spend, budget = plan.amounts(5_000, 900_000)
    return {"answer": answer, "other": other, "Manager": answer, "Deputy": other, "Spend": spend, "Budget": budget}


def _regional(metric: str, region: str) -> dict[str, str]:
    subject = f"{metric} in the {region} region"
    return {"subject": subject, "subject_capitalised": subject[:1].upper() + subject[1:]}


def _metric(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.percents()
    return {"answer": answer, "other": other}


def _milestone(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.dates()
    return {"answer": answer, "other": other}


_SITES = tuple({"subject": f"{place} {facility}"} for place in words.PLACES for facility in _FACILITIES)
SPEND = Kind(
    "spend",
    (_MARKDOWN, _PLAIN),
    (
        "What was the spend at {subject} in {quarter}?",
        "How much did {subject} spend this quarter?",
        "What was the actual spend of {subject} according to the {report}?",
    ),
    _SITES,
    _spend,
)
MANAGER = Kind(
    "manager",
    (_MARKDOWN, _PLAIN),
    (
        "Who manages {subject}?",
        "Who is the manager of {subject}?",
        "Which manager is responsible for {subject} in the {report}?",
    ),
    _SITES,
    _manager,
)
METRIC = Kind(
    "metric",
    (
        "- {subject_capitalised}: {answer}, against a target of {other}.",
        "- {subject_capitalised} reached {answer} this quarter ({other} a year earlier).",
        "- {subject_capitalised} stood at {answer}; the target was {other}.",
    ),
    (
        "What was {subject} this quarter?",
        "What figure did {subject} reach in {quarter}?",
        "What level did {subject} reach according to the {report}?",
    ),
    tuple(_regional(metric, region) for metric in _METRICS for region in _REGIONS),
    _metric,
)
MILESTONE = Kind(
    "milestone",
    (
        "The {subject} was completed on {answer}; the baseline date had been {other}.",
        "Work on the {subject} finished on {answer}; the contract date had been {other}.",
        "The {subject}, first planned for {other}, was signed off on {answer}.",
    ),
    (
        "When was the {subject} completed?",
        "On what date did the {subject} finish?",
        "When was the {subject} finished according to the {report}?",
    ),
    tuple({"subject": work} for work in _WORKS),
    _milestone,
)


class ReportPlan(Plan):
    kinds = (SPEND, MANAGER, METRIC, MILESTONE)

    def topic(self) -> dict[str, str]:
        org = f"{self.rng.choice(words.EMBLEMS)} {self.rng.choice(_SERVICES)}"
        quarter = f"Q{self.rng.randint(1, 4)} {self.rng.randint(*words.YEARS)}"
        return {"org": org, "report": f"{org} Quarterly Performance Report", "quarter": quarter}

    def setup(self) -> None:
        self.columns = ["Site", *self.rng.sample(_COLUMNS, len(_COLUMNS))]

    def state(self, kind: Kind, phrasing: int, slots: dict[str, str]) -> str:
        if kind.facts[phrasing] == _MARKDOWN:
            return "| " + " | ".join(slots[c] if c != "Site" else slots["subject"] for c in self.columns) + " |"
        if kind.facts[phrasing] == _PLAIN:
            cells = [slots[c] if c != "Site" else slots["subject"] for c in self.columns]
            return "".join(cell.ljust(_WIDTHS[c]) for c, cell in zip(self.columns, cells)).rstrip()
        return super().state(kind, phrasing, slots)

    def header(self) -> str:
        return (
            f"{self.slots['report'].upper()}\n{self.slots['quarter']}\n\nThis {self.slots['report']} sets out "
            f"spending, staffing and performance for {self.slots['quarter']}, site by site and region by region."
        )

    def section(self, number: int, gold: bool) -> str:
        shape = self.rng.choice(["table", "list", "paragraph"])
        if gold:
            shape = {"spend": "table", "manager": "table", "metric": "list", "milestone": "paragraph"}[self.gold.kind]
        lines = [f"## {number}. {self.rng.choice(_THEMES)}", "", self.rng.choice(_REMARKS).format(**self.slots), ""]
        if shape == "table":
            lines += self._table(number, gold)
        elif shape == "list":
            items = [self.fact(METRIC) for _ in range(self.rng.randint(2, 4))]
            if gold:
                items.insert(self.rng.randint(0, len(items)), self.gold.text)
            lines += [f"Key figures for {self.slots['quarter']}:", *items]
        else:
            sentences = [self.fact(MILESTONE) for _ in range(self.rng.randint(1, 2))]
            if gold:
                sentences.insert(self.rng.randint(0, len(sentences)), self.gold.text)
            lines.append(" ".join(sentences))
        if number % 3 == 0:
            lines += ["", f"{self.slots['report']} | {self.slots['quarter']} | page {number // 3 + 1}"]
        return "\n".join(lines)

    def _table(self, number: int, gold: bool) -> list[str]:
        layout = next(p for p, t in enumerate(SPEND.facts) if t == self.gold.fact_phrasing) if gold else None
        layout = self.rng.randrange(2) if layout is None else layout
        kinds = [self.rng.choice([SPEND, MANAGER]) for _ in range(self.rng.randint(2, 5))]
        rows = [self.entry(kind, phrasing=layout)[1] for kind in kinds]
        if gold:
            rows.insert(self.rng.randint(0, len(rows)), self.gold.text)
        caption = f"Table {number}: spend and staffing at {self.slots['org']} sites, {self.slots['quarter']}"
        if SPEND.facts[layout] == _MARKDOWN:
            return [caption, "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns), *rows]
        head = "".join(c.ljust(_WIDTHS[c]) for c in self.columns).rstrip()
        return [caption, "", head, "-" * len(head), *rows]

    def closing(self) -> list[str]:
        report = self.slots["report"]
        return [
            f"Questions about this {report} should go to the performance team of the {self.slots['org']}.",
            f"The next {report} will cover the following quarter and will be published with the board papers.",
            f"Site figures in the {report} come from the finance ledger and the staffing system.",
            f"Totals in the {report} may not add up exactly because of rounding.",
        ] * 3
