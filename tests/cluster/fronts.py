"""`kiln serve` processes on loopback ports, for tests of several fronts (and the browser's).

A `Front` is a real server process: it can be stopped cleanly or killed like a crashed machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class Front:
    """`kiln serve` of `data_dir` with `env` on top of this process's environment, on a free
    loopback port; its output goes to `log_path`."""

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        full_env = {**os.environ, "KILN_PORT": str(port), "KILN_PUBLIC_URL": self.base, **env}
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kiln.cli", "--data-dir", str(data_dir), "serve"],
                stdout=log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Return once `/ready` answers 200; RuntimeError with the log's end if it exits or
        does not get ready in time."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kiln serve did not get ready:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return httpx.get(self.base + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no drain, no deregistering, as when its machine dies."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
