"""A manual page (a training genre): a command's reference page in the layout of `man`, with groups of options,
files and environment variables. Facts: an option's default (a number with its unit), the file that holds
something (a file name), the environment variable that sets something (a term)."""

from . import words
from .base import Kind, Plan, subjects

_SUFFIXES = ["sync", "backup", "relay", "index", "mirror", "queue", "watch", "ctl", "fetch", "archive"]
_PURPOSES = [
    "copy files between hosts and keep them in step",
    "back up directories to a remote store",
    "relay messages between queues",
    "index documents for fast search",
    "mirror package repositories",
    "schedule and run batch jobs",
]
_AREAS = [
    "connect", "read", "retry", "lock", "sync", "upload", "index", "purge", "snapshot", "report", "session",
    "queue", "cache", "log", "batch", "probe",
]  # fmt: skip
# Option nouns: the units of their values and what the option does.
_NOUNS = {
    "timeout": (["seconds", "minutes"], "How long {tool} waits for a {area} step before giving up."),
    "interval": (["seconds", "minutes"], "How often {tool} repeats the {area} step."),
    "delay": (["seconds", "milliseconds"], "How long {tool} pauses before each {area} step."),
    "buffer": (["KiB", "MiB"], "Memory set aside for the {area} step."),
    "limit": (["MiB", "GiB"], "The most data one {area} step may move."),
    "retries": (["attempts"], "How many times {tool} repeats a failed {area} step."),
    "workers": (["threads"], "How many {area} steps {tool} runs at once."),
    "backlog": (["entries"], "How many pending {area} steps {tool} keeps in memory."),
}
_LOW = {"seconds": 2, "minutes": 2, "milliseconds": 20, "KiB": 16, "MiB": 2, "GiB": 2}
_HIGH = {"seconds": 900, "minutes": 240, "milliseconds": 5000, "KiB": 8192, "MiB": 4096, "GiB": 512}
_FILE_PURPOSES = [
    "system-wide configuration", "per-user configuration", "list of excluded paths", "host key", "job queue",
    "state database", "crash report", "plugin list", "audit trail", "run schedule", "credentials store",
    "transfer journal", "mirror list", "bandwidth rules", "peer list", "pid record",
]  # fmt: skip
_FILE_STEMS = [
    "hosts", "rules", "state", "queue", "journal", "keys", "mirrors", "plugins", "schedule", "exclude", "audit",
    "access", "limits", "peers", "spool", "ledger",
]  # fmt: skip
_FILE_EXTENSIONS = ["conf", "db", "list", "json", "toml", "log", "yaml"]
_VARIABLE_PURPOSES = [
    "the proxy used for uploads", "the directory for temporary files", "the colour of terminal output",
    "the default remote host", "the number of parallel transfers", "the log level", "the user agent string",
    "the time zone of reports", "the upload bandwidth limit", "the editor used for job notes",
    "the address of the metrics server", "the path of the socket", "the default storage class",
    "the name of the current profile",
]  # fmt: skip
_VARIABLE_WORDS = [
    "PROXY", "TMPDIR", "COLOR", "LOCK", "HOST", "JOBS", "LEVEL", "AGENT", "KEYRING", "TZ", "RATE", "EDITOR", "HOME",
    "PEERS", "DEBUG", "SPOOL", "SOCKET", "PROFILE", "CLASS", "METRICS",
]  # fmt: skip
_GROUPS = ["TRANSFER", "LOGGING", "NETWORK", "STORAGE", "SCHEDULING", "SECURITY", "REPORTING", "CACHE"]
_NOTES = [
    "See also the section on exit status of this page of {tool}.",
    "This setting applies to every profile of {tool} unless a profile overrides it.",
    "{title} documents the behaviour of version {version}.",
    "Changing this value while {tool} runs has no effect until the next start.",
    "Scripts that call {tool} should set this explicitly rather than rely on the default.",
]


def _default(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    unit = plan.rng.choice(_NOUNS[subject["noun"]][0])
    values = plan.quantities(_LOW.get(unit, 2), _HIGH.get(unit, 64), unit)
    answer, other = sorted(values, key=lambda value: int(value.split()[0]), reverse=True)  # the floor is lower
    return {"answer": answer, "other": other}


def _file(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    answer, other = plan.files(_FILE_STEMS, _FILE_EXTENSIONS, "-")
    return {"answer": answer, "other": other}


def _variable(plan: Plan, subject: dict[str, str]) -> dict[str, str]:
    def name() -> str:
        return "_".join([plan.slots["env"], *plan.rng.sample(_VARIABLE_WORDS, plan.rng.randint(1, 2))])

    answer, other = plan.two(name)
    return {"answer": answer, "other": other}


DEFAULT = Kind(
    "default",
    (
        "The default for {subject} is {answer}; values below {other} are raised to {other}.",
        "If {subject} is not given, {tool} uses {answer} ({other} when --fast is also given).",
        "When {subject} is omitted the value is {answer}, and never less than {other}.",
        "Without {subject}, {tool} falls back to {answer}; the lowest accepted value is {other}.",
    ),
    (
        "What is the default value of {subject}?",
        "If {subject} is not given, what value does {tool} use?",
        "What does {tool} use for {subject} by default?",
    ),
    tuple({"subject": f"--{area}-{noun}", "noun": noun, "area": area} for area in _AREAS for noun in _NOUNS),
    _default,
)
FILE = Kind(
    "file",
    (
        "The {subject} of {tool} is read from /etc/{tool}/{answer}; {other} in the same directory is ignored since "
        "version {version}.",
        "The {subject} is kept in {answer}, and an older copy may be left in {other}.",
        "{answer} holds the {subject}; {tool} creates {other} next to it while writing.",
    ),
    (
        "Which file holds the {subject} of {tool}?",
        "What is the name of the file where {tool} keeps its {subject}?",
        "In which file does {tool} keep the {subject}?",
    ),
    subjects(*_FILE_PURPOSES),
    _file,
)
VARIABLE = Kind(
    "variable",
    (
        "{answer} sets {subject}; it overrides {other}, which releases before {version} read.",
        "The value of {answer} gives {subject}, or {other} when that is unset.",
        "For {subject}, {tool} reads {answer}; {other} is no longer read.",
    ),
    (
        "Which environment variable sets {subject}?",
        "What variable controls {subject} in {tool}?",
        "Which environment variable does {tool} read for {subject}?",
    ),
    subjects(*_VARIABLE_PURPOSES),
    _variable,
)
_INDENT = " " * 7


class ManualPlan(Plan):
    kinds = (DEFAULT, FILE, VARIABLE)

    def topic(self) -> dict[str, str]:
        tool = f"{self.rng.choice(words.EMBLEMS).lower()}-{self.rng.choice(_SUFFIXES)}"
        version = f"{self.rng.randint(1, 9)}.{self.rng.randint(0, 19)}.{self.rng.randint(0, 9)}"
        return {
            "tool": tool,
            "title": f"{tool.upper()}(1)",
            "env": tool.upper().replace("-", "_"),
            "version": version,
        }

    def setup(self) -> None:
        self.purpose = self.rng.choice(_PURPOSES)
        self.updated = words.date(self.rng, "long")

    def header(self) -> str:
        tool, title = self.slots["tool"], self.slots["title"]
        return "\n".join(
            [
                f"{title}{'User Commands':^50}{title}",
                "",
                "NAME",
                f"{_INDENT}{tool} - {self.purpose}",
                "",
                "SYNOPSIS",
                f"{_INDENT}{tool} [OPTION]... SOURCE DEST",
                "",
                "DESCRIPTION",
                f"{_INDENT}{tool} is a command to {self.purpose}. This page documents {tool} version "
                f"{self.slots['version']}; options, files and environment variables are listed by group.",
            ]
        )

    def section(self, number: int, gold: bool) -> str:
        group = (number - 1) // 4
        group_kind = self.kinds[group % len(self.kinds)]
        kind = next(k for k in self.kinds if k.name == self.gold.kind) if gold else group_kind
        if gold:
            subject, fact = self.gold_subject(), self.gold.text
        else:
            subject, fact = self.entry(kind)
        lines = []
        if (number - 1) % 4 == 0:
            heading = {"default": "OPTIONS", "file": "FILES", "variable": "ENVIRONMENT"}[group_kind.name]
            lines.append(f"{_GROUPS[group % len(_GROUPS)]} {heading} OF {self.slots['tool'].upper()}")
        if kind.name == "default":
            units, description = _NOUNS[subject["noun"]]
            lines.append(f"{_INDENT}{subject['subject']}={units[0].upper()}")
            description = description.format(tool=self.slots["tool"], area=subject["area"])
        else:
            lines.append(f"{_INDENT}{subject['subject'][:1].upper()}{subject['subject'][1:]}")
            description = f"Read by {self.slots['tool']} at start-up."
        note = self.rng.choice(_NOTES).format(**self.slots) if self.rng.random() < 0.5 else ""
        lines.append(f"{_INDENT}{_INDENT}{' '.join(part for part in [description, fact, note] if part)}")
        if number % 6 == 0:
            lines.append(f"\n{self.slots['tool']} {self.slots['version']}{self.updated:^40}{self.slots['title']}")
        return "\n".join(lines)

    def closing(self) -> list[str]:
        tool = self.slots["tool"]
        return [
            f"Report bugs in {tool} to the issue tracker of the project.",
            f"The options of {tool} may also be set in its configuration file, one per line, without the dashes.",
            f"Exit status of {tool} is zero on success and non-zero when any transfer failed.",
            f"This manual page of {tool} is maintained with the source and was reviewed for this release.",
            f"Copyright the authors of {tool}. This is free software; see the source for copying conditions.",
        ] * 3
