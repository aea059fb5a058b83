"""`lychee-hf serve` in a subprocess on a free loopback port, for tests and benchmarks: started, waited for until
ready, stopped (or killed) again.

    with LocalServer(banks="banks/", model="ckpt/") as server:
        httpx.get(server.url + "/v1/documents")
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """A server process on 127.0.0.1.

    Args:
        banks (`str` or `Path`): the document store.
        model (`str`, *optional*): checkpoint folder (default: the embedded model).
        api_keys (`str` or `Path`, *optional*): keys file.
        options (`list[str]`): more `lychee-hf serve` options (limits).
        log (`str` or `Path`, *optional*): file for the server's output (default: `serve-PORT.log` in `banks`'s
            parent folder).
        env (`dict`, *optional*): environment variables to set for the process (e.g. `OMP_NUM_THREADS`).
    """

    def __init__(self, banks, model=None, api_keys=None, options=(), log=None, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log) if log else Path(banks).resolve().parent / f"serve-{self.port}.log"
        self.argv = [sys.executable, "-m", "lychee_hf.cli", "serve", "--banks", str(banks), "--port", str(self.port)]
        self.argv += [
            "--quiet",
            *(["--model", str(model)] if model else []),
            *(["--api-keys", str(api_keys)] if api_keys else []),
        ]
        self.argv += [str(option) for option in options]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> "LocalServer":
        """Starts the process and waits until `/readyz` answers 200 (raises with the log's tail otherwise)."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lychee-hf serve exited with status {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"lychee-hf serve was not ready within {timeout} s:\n{self.tail()}")

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-characters:] if self.log.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully: compressions stop after their step), then SIGKILL if needed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: the process ends at once, mid-step."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
