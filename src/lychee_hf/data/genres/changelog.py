"""Release notes (a training genre): a product's changelog, newest release first, each release a heading with its
version and date and lists of changes under Added / Changed / Removed / Fixed. Facts: a setting's new default (a
number with its unit), the option that replaces another (a term), who fixed a bug (a name), the file a part ships
as (a file name)."""

import datetime

from . import words
from .base import Kind, Plan, subjects

_PRODUCTS = ["Gateway", "Server", "Desktop", "CLI", "Sync", "Analytics", "Scheduler", "Studio", "Vault"]
_SETTINGS = {
    "connection timeout": "seconds",
    "cache size": "MiB",
    "upload chunk size": "KiB",
    "session lifetime": "minutes",
    "log rotation interval": "hours",
    "retry delay": "milliseconds",
    "snapshot interval": "minutes",
    "index page size": "entries",
    "worker pool size": "threads",
    "export batch size": "rows",
    "idle disconnect time": "seconds",
    "thumbnail cache limit": "MiB",
    "audit log retention": "days",
    "password reset window": "minutes",
}
_HIGH = {"seconds": 900, "MiB": 8192, "KiB": 8192, "minutes": 480, "hours": 168, "milliseconds": 9000}
_OLD_FLAGS = [
    f"--{first}-{second}"
    for first in ["legacy", "plain", "old", "no", "skip", "force", "raw", "fast", "safe", "strict", "quiet", "dry"]
    for second in ["auth", "tls", "sync", "cache", "index", "proxy", "upload", "checks", "retry", "locks", "output"]
]
_NEW_FIRST = ["auth", "tls", "sync", "cache", "index", "proxy", "upload", "check", "retry", "lock", "output", "log"]
_NEW_SECOND = ["mode", "policy", "method", "level", "source", "store", "backend", "format", "profile", "strategy"]
_BUGS = [
    "crash when the disk is full", "memory leak in the upload worker", "wrong totals in the monthly export",
    "timeouts during large uploads", "duplicate e-mails after a retry", "slow start-up with many plugins",
    "broken links in the help pages", "lost settings after an upgrade", "wrong time zone in reports",
    "hang on shutdown", "garbled accents in file names", "missing rows in CSV exports",
    "double billing on renewal", "blank dashboard after login", "stale search results",
]  # fmt: skip
_PARTS = [
    "sample configuration", "migration script", "database schema", "example plugin", "service unit",
    "shell completion", "default theme", "container recipe", "backup hook", "health check script",
]  # fmt: skip
_FILE_STEMS = [
    "config", "sample", "migrate", "schema", "plugin", "unit", "completion", "theme", "compose", "defaults",
    "setup", "upgrade", "example", "local", "hook", "health",
]  # fmt: skip
_CHORES = [
    "- Updated the translations of the {product} interface.",
    "- Improved the speed of searches in {product}.",
    "- Documentation fixes for {product}.",
    "- Upgraded bundled libraries of {product} to their latest patch releases.",
    "- Clearer error messages when {product} cannot reach its database.",
    "- Internal refactoring; no change in behaviour of {product}.",
]
_GROUP = {"default": "Changed", "replaced": "Removed", "fixed_by": "Fixed", "file": "Added"}


def _default(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    unit = subject["unit"]
    answer, other = plan.quantities(2, _HIGH.get(unit, 500), unit)
    return {"answer": answer, "other": other}


def _replaced(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.two(lambda: f"--{plan.rng.choice(_NEW_FIRST)}-{plan.rng.choice(_NEW_SECOND)}")
    return {"answer": answer, "other": other}


def _fixed_by(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.people()
    return {"answer": answer, "other": other}


def _file(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.files(_FILE_STEMS, ["yaml", "sql", "py", "toml", "sh", "service", "json"], "-")
    return {"answer": answer, "other": other}


DEFAULT = Kind(
    "default",
    (
        "- Changed: the default {subject} is now {answer} (was {other}).",
        "- The {subject} now defaults to {answer} instead of {other}.",
        "- Changed the default {subject} from {other} to {answer}.",
    ),
    (
        "What is the new default {subject} in {product}?",
        "What does the {subject} default to now?",
        "To what value was the default {subject} changed?",
    ),
    tuple({"subject": setting, "unit": unit} for setting, unit in _SETTINGS.items()),
    _default,
)
REPLACED = Kind(
    "replaced",
    (
        "- Removed {subject}; use {answer} instead, or {other} in scripts.",
        "- Deprecated {subject} in favour of {answer}; {other} is unaffected.",
        "- {subject} is replaced by {answer} ({other} keeps its old meaning).",
    ),
    (
        "Which option replaces {subject}?",
        "What should be used instead of {subject}?",
        "In favour of which option was {subject} dropped from {product}?",
    ),
    subjects(*_OLD_FLAGS),
    _replaced,
)
FIXED_BY = Kind(
    "fixed_by",
    (
        "- Fixed the {subject} (reported by {other}, fixed by {answer}).",
        "- {answer} fixed the {subject}, first reported by {other}.",
        "- The {subject} is gone: thanks to {answer} for the fix and {other} for the report.",
    ),
    (
        "Who fixed the {subject}?",
        "Who contributed the fix for the {subject}?",
        "Which contributor fixed the {subject} in {product}?",
    ),
    subjects(*_BUGS),
    _fixed_by,
)
FILE = Kind(
    "file",
    (
        "- Added {answer}, a {subject} for {product}; {other} is kept for older installs.",
        "- The {subject} now ships as {answer} (previously {other}).",
        "- Renamed the {subject} from {other} to {answer}.",
    ),
    (
        "Which file is the new {subject}?",
        "Under what name does the {subject} ship now?",
        "What is the file name of the {subject} in {product}?",
    ),
    subjects(*_PARTS),
    _file,
)


class ChangelogPlan(Plan):
    kinds = (DEFAULT, REPLACED, FIXED_BY, FILE)

    def topic(self) -> dict[str, str]:
        emblem = self.rng.choice(words.EMBLEMS)
        return {"product": f"{emblem} {self.rng.choice(_PRODUCTS)}", "short": emblem}

    def setup(self) -> None:
        self.version = [self.rng.randint(4, 12), self.rng.randint(3, 14), self.rng.randint(0, 6)]
        self.released = datetime.date(words.YEARS[1], 12, 31) - datetime.timedelta(days=self.rng.randint(0, 300))

    def header(self) -> str:
        product = self.slots["product"]
        return (
            f"# {product} release notes\n\nAll notable changes to {product} are listed here, newest release first. "
            f"{product} follows semantic versioning; upgrade notes for {product} are in each release."
        )

    def section(self, number: int, gold: bool) -> str:
        self._previous_release()
        major, minor, patch = self.version
        lines = [f"## {self.slots['product']} {major}.{minor}.{patch} ({self.released.isoformat()})"]
        facts = [self.entry_of(self.rng.choice(self.kinds)) for _ in range(self.rng.randint(1, 3))]
        if gold:
            facts.insert(self.rng.randint(0, len(facts)), (self.gold.kind, self.gold.text))
        facts += [("chore", chore.format(**self.slots)) for chore in self.rng.sample(_CHORES, self.rng.randint(0, 2))]
        for group in ("Added", "Changed", "Removed", "Fixed", "Other"):
            items = [text for kind, text in facts if _GROUP.get(kind, "Other") == group]
            if items:
                lines += ["", f"### {group}", *items]
        return "\n".join(lines)

    def entry_of(self, kind: Kind) -> tuple[str, str]:
        return kind.name, self.fact(kind)

    def _previous_release(self) -> None:
        """Steps the version and the date back to the release before (sections run newest first)."""
        major, minor, patch = self.version
        if patch > 0:
            patch -= 1
        elif minor > 0:
            minor, patch = minor - 1, self.rng.randint(0, 5)
        else:
            major, minor, patch = max(1, major - 1), self.rng.randint(6, 14), self.rng.randint(0, 5)
        self.version = [major, minor, patch]
        self.released -= datetime.timedelta(days=self.rng.randint(6, 45))

    def closing(self) -> list[str]:
        product = self.slots["product"]
        return [
            f"Older releases of {product} are described in the archive of these notes.",
            f"Every release of {product} is signed; checksums are published with the downloads.",
            f"Security fixes for {product} are announced on the mailing list before they are listed here.",
            f"Report problems with a release of {product} on the issue tracker, with the version you run.",
        ] * 3
