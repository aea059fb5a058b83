"""Measures every timing, size and answer claim the README makes about the main job, as a newcomer runs it.

Each step runs the installed `lychee-hf` command in a fresh process, with the default model's cache in a new
temporary folder (LYCHEE_HF_HOME), so the first run pays for building the default exactly as on a new machine:

    python benchmarks/readme_claims.py            # about 3-5 minutes on 2 CPU cores
    python benchmarks/readme_claims.py --json claims.json

Run it on an idle machine: other processes on the cores slow every figure. Prints one table; the ratio column
compares each timing with the first run of the main job, measured in the same run.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "examples" / "harbor_town.txt"
MAIN_QUESTION = "Who founded the Saltmarsh bakery?"
# Natural questions about facts the example document states, with the answer a reader would accept.
QUESTIONS = {
    "Who founded the Saltmarsh bakery?": "Odile Fennick",
    "What is the name of the lighthouse keeper's cat?": "Biscuit",
    "In which year was the stone bridge over the Vell river finished?": "1784",
    "What colour was the door of the old customs house painted?": "green",
    "Who was the lighthouse keeper?": "Mara Quell",
    "What bread did the founder of the Saltmarsh bakery bake?": "rye",
}


def lychee_hf(*args: str, home: Path) -> tuple[float, subprocess.CompletedProcess]:
    command = [str(Path(sys.executable).parent / "lychee-hf"), *args]
    environment = {**os.environ, "LYCHEE_HF_HOME": str(home)}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"`lychee-hf {' '.join(args)}` failed:\n{result.stderr[-3000:]}")
    return seconds, result


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def measure(work: Path) -> dict:
    home = work / "cache"
    main_job = ("ask", "--context", str(DOCUMENT), "--question", MAIN_QUESTION, "--trace")
    first, result = lychee_hf(*main_job, home=home)
    answer = result.stdout.strip().splitlines()[0]
    build_home = work / "cache-build-only"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from lychee_hf.default_model import ensure_default_model; ensure_default_model()"],
        check=True,
        capture_output=True,
        env={**os.environ, "LYCHEE_HF_HOME": str(build_home)},
    )
    build = time.perf_counter() - started
    warm = min(lychee_hf(*main_job, home=home)[0] for _ in range(2))
    help_seconds = min(lychee_hf("--help", home=home)[0] for _ in range(5))
    bank = work / "bank"
    compress, _ = lychee_hf("compress", "--context", str(DOCUMENT), "--out", str(bank), "--quiet", home=home)
    out = work / "answers.json"
    questions = [arg for question in QUESTIONS for arg in ("--question", question)]
    ask_bank, _ = lychee_hf("ask", "--bank", str(bank), *questions, "--json", str(out), "--quiet", home=home)
    answers = json.loads(out.read_text())
    correct = {a["question"]: normalise(QUESTIONS[a["question"]]) in normalise(a["answer"]) for a in answers}
    return {
        "first_run_seconds": first,
        "warm_run_seconds": warm,
        "build_seconds": build,
        "help_seconds": help_seconds,
        "compress_seconds": compress,
        "ask_from_bank_seconds": ask_bank,
        "questions": len(answers),
        "bank_mib": folder_mib(bank),
        "document_kib": DOCUMENT.stat().st_size / 1024,
        "main_answer": answer,
        "answers": {a["question"]: [a["answer"], correct[a["question"]]] for a in answers},
        "correct": sum(correct.values()),
    }


def table(claims: dict) -> str:
    first = claims["first_run_seconds"]
    rows = [
        ("main job, first run (fresh cache: builds the default)", first),
        ("main job, warm (best of 2)", claims["warm_run_seconds"]),
        ("building the default alone", claims["build_seconds"]),
        ("lychee-hf --help (best of 5)", claims["help_seconds"]),
        ("compress the example into a bank", claims["compress_seconds"]),
        (f"ask {claims['questions']} questions from the bank", claims["ask_from_bank_seconds"]),
    ]
    lines = [f"{'what':<56}{'seconds':>9}{'vs first run':>14}", "-" * 79]
    lines += [f"{name:<56}{seconds:>9.1f}{seconds / first:>14.2f}" for name, seconds in rows]
    lines += [
        "",
        f"example document: {claims['document_kib']:.0f} KiB; its bank: {claims['bank_mib']:.1f} MiB",
        f"main job's answer: {claims['main_answer']}",
        f"natural questions answered right (substring match): {claims['correct']} of {claims['questions']}",
    ]
    lines += [f"  {'yes' if ok else 'no ':<4}{q} -> {a}" for q, (a, ok) in claims["answers"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lychee-readme-claims-"))
    try:
        claims = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    claims["date"] = time.strftime("%Y-%m-%d")
    claims["cores"] = os.cpu_count()
    print(table(claims))
    if args.json:
        Path(args.json).write_text(json.dumps(claims, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
