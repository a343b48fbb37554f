"""llama.cpp's own server as the benchmarks' anchor: found on PATH (or $VICHAT_LLAMA_SERVER), started on
127.0.0.1 on a free port, stopped afterwards. The README ("llama.cpp on this CPU") says how to build it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator


def server_binary() -> str | None:
    return os.environ.get("VICHAT_LLAMA_SERVER") or shutil.which("llama-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(gguf: str, *args: str, threads: int | None = None, wait_s: float = 180) -> Iterator[str]:
    """Run ``llama-server -m gguf args...`` and yield its base URL; RuntimeError if it cannot start."""
    binary = server_binary()
    if binary is None:
        raise RuntimeError("no llama-server binary on PATH (README: 'llama.cpp on this CPU')")
    port = _free_port()
    threads = threads or os.cpu_count() or 1
    cmd = [binary, "-m", gguf, *args, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads)]
    proc = subprocess.Popen([*cmd, "-tb", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                tail = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"llama-server exited with {proc.returncode} at start: {' '.join(tail)}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not become healthy in {wait_s:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def complete(url: str, body: dict, timeout: float = 600) -> dict:
    """POST ``body`` to llama-server's native /completion; its JSON answer (with ``timings``)."""
    req = urllib.request.Request(
        url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())
