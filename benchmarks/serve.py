"""The service under load: questions per second and latency at 1, 4 and 16 concurrent clients, against answering
the same questions one at a time in one process, in the same run. Loopback only.

    python benchmarks/serve.py --smoke            # a minute or two: one short document, few questions
    python benchmarks/serve.py                    # harbor_town.txt, 4 questions per client at each level

A `lychee-hf serve` process (the embedded default model unless --model) compresses the document once; clients
(threads, one HTTP connection each) then ask it questions through POST /v1/documents/{id}/answers, each client one
question at a time. The baseline loads the same model in this process and asks the same questions one by one with
`model.generate` over the same bank. Each line gives questions/s, p50/p95 latency and the throughput ratio to the
baseline. Answers are greedy, so the server's answers equal the baseline's (checked). Both sides answer one
untimed warm-up question first. On a shared machine the figures move with the load: compare ratios of one run.
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.loading import load_pretrained
from lychee_hf.serve.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [  # facts of examples/harbor_town.txt (benchmarks/readme_claims.py asks them too)
    "Who founded the Saltmarsh bakery?",
    "What is the name of the lighthouse keeper's cat?",
    "What colour was the door of the old customs house painted?",
    "What bread did the founder of the Saltmarsh bakery bake?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ask_concurrently(url: str, document_id: str, questions: list[str], clients: int) -> tuple[float, list, dict]:
    """(wall seconds, latencies, answers by question) of `questions` asked by `clients` threads."""
    latencies, answers, lock = [], {}, threading.Lock()
    todo = list(enumerate(questions))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=3600) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    _, question = todo.pop()
                started = time.perf_counter()
                response = http.post(f"/v1/documents/{document_id}/answers", json={"question": question})
                response.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)
                    answers[question] = response.json()["answers"][0]["answer"]

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, answers


def one_at_a_time(model_path, bank_dir: Path, questions: list[str]) -> tuple[float, list, dict]:
    model, tokenizer = load_pretrained(model_path, quiet=True)
    bank = LycheeMemoryBank.from_pretrained(bank_dir)
    latencies, answers = [], {}
    ask_alone(model, tokenizer, bank, questions[0])  # warm-up, untimed (the server gets one too)
    started = time.perf_counter()
    for question in questions:
        began = time.perf_counter()
        answers[question] = ask_alone(model, tokenizer, bank, question)
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - started, latencies, answers


def in_a_thread(threads: int, function, *args):
    """`function(*args)` in a new thread with `threads` torch threads, as the server runs `generate` (in its
    scheduler thread, under OMP_NUM_THREADS=threads)."""
    result = []

    def run() -> None:
        torch.set_num_threads(threads)
        result.append(function(*args))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0]


def ask_alone(model, tokenizer, bank, question: str) -> str:
    ids = torch.tensor([tokenizer.encode(question, add_special_tokens=False)])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, bank=bank, return_dict_in_generate=True, show_progress=False)
    return out.trace[0].to_dict(tokenizer)["answer"]


def row(name: str, clients: int, seconds: float, latencies: list[float], baseline: float | None) -> str:
    rate = len(latencies) / seconds
    ratio = f"{rate / baseline:.2f}x" if baseline else "1.00x"
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    return f"| {name} | {clients} | {len(latencies)} | {rate:.3f} | {p50:.0f} | {p95:.0f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    parser.add_argument("--smoke", action="store_true", help="one short document, few questions (a quick check)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels (default: 1,4,16)")
    parser.add_argument("--per-client", type=int, default=4, help="questions per client at each level (default: 4)")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads on both sides (default: torch's; on a busy small machine 1 is the steadier setting: "
        "a 2-thread team was measured up to 10x slower than 1 thread on 2 shared cores)",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.clients.split(",")]

    text = (ROOT / "examples" / "harbor_town.txt").read_text(encoding="utf-8")
    if args.smoke:
        text, args.per_client = text[:800], 1
    model_path = args.model
    if model_path is None:
        from lychee_hf.default_model import ensure_default_model

        model_path = str(ensure_default_model(verbose=False))
    baseline_questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(max(4, args.per_client * 4))]
    with tempfile.TemporaryDirectory() as folder:
        options = ["--max-queue", "1024", "--request-timeout-s", "3600"]
        threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        with LocalServer(Path(folder) / "banks", model_path, options=options, env=threads) as server:
            document_id = httpx.post(server.url + "/v1/documents", json={"text": text}, timeout=600).json()["id"]
            while (state := httpx.get(f"{server.url}/v1/documents/{document_id}").json())["status"] != "ready":
                if state["status"] == "failed":
                    raise SystemExit(f"compression failed: {state['error']}")
                time.sleep(0.2)
            print(
                f"document: {state['tokens']} tokens, {state['blocks_total']} blocks; model {model_path}; "
                f"{args.threads} torch threads"
            )
            ask_concurrently(server.url, document_id, QUESTIONS[:1], 1)  # warm-up, untimed
            bank_dir = Path(folder) / "banks" / "documents" / document_id / "bank"
            seconds, latencies, expected = in_a_thread(
                args.threads, one_at_a_time, model_path, bank_dir, baseline_questions
            )
            baseline = len(latencies) / seconds
            lines = [row("one process, one at a time", 1, seconds, latencies, None)]
            for clients in levels:
                questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(clients * args.per_client)]
                seconds, latencies, answers = ask_concurrently(server.url, document_id, questions, clients)
                lines.append(row("server (batched)", clients, seconds, latencies, baseline))
                mismatched = [q for q in answers if answers[q] != expected[q]]
                if mismatched:
                    print(f"note: {len(mismatched)} answers differ from the baseline's at {clients} clients")
    print("| mode | clients | questions | questions/s | p50 ms | p95 ms | vs one at a time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
