"""Runs one benchmark client against a fresh fake Binance process and returns its result.

Used by ``bench/run.py`` (peer comparison) and ``bench/scaling.py``.  Starts
``fake_binance_proc.py`` (ws:// or wss://), then the client script in its own
process with the fake's URLs and CA file, waits for both, and checks the
client's final-book hash against the server's true book: a result whose hash
differs is marked ``valid: False`` and never counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: client name -> script (each runs in its own process)
CLIENTS = {
    "txexchange-push": ("client_txexchange.py", ["--mode", "push"]),
    "txexchange-pull": ("client_txexchange.py", ["--mode", "pull"]),
    "ccxt.pro": ("client_ccxtpro.py", []),
    "cryptofeed": ("client_cryptofeed.py", []),
    "floor": ("client_floor.py", []),
}


def _read_json_line(proc: subprocess.Popen[str], key: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake server exited before {key!r}")
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if key in obj:
            return obj
    raise TimeoutError(f"no {key!r} from the fake server")


def run_one(
    client: str,
    *,
    tls: bool,
    symbols: int = 10,
    messages: int = 100_000,
    levels: int = 100,
    changes: int = 10,
    rate: float = 0.0,
    seed: int = 1,
    timeout: float = 600.0,
    extra: list[str] | None = None,
    server_extra: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``client`` once; the result dict of the client plus ``valid`` and server figures."""
    script, client_extra = CLIENTS[client]
    tmp = Path(tempfile.mkdtemp(prefix="txexchange-bench-"))
    ca_file = tmp / "ca.pem"
    server_cmd = [
        sys.executable, str(HERE / "fake_binance_proc.py"),
        "--symbols", str(symbols), "--messages", str(messages), "--levels", str(levels),
        "--changes", str(changes), "--seed", str(seed), "--rate", str(rate),
    ]  # fmt: skip
    if tls:
        server_cmd += ["--tls", "--ca-file", str(ca_file)]
    server_cmd += server_extra or []
    server = subprocess.Popen(
        server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = _read_json_line(server, "ready", 300)["ready"]
        ws = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"
        rest = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        cmd = [
            sys.executable, str(HERE / script), "--ws", ws, "--rest", rest,
            "--symbols", str(symbols), "--messages", str(messages), "--levels", str(levels),
            *client_extra, *(extra or []),
        ]  # fmt: skip
        if tls:
            cmd += ["--ca-file", str(ca_file)]
        if rate:
            cmd += ["--latency"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        result: dict[str, Any] = {"client": client, "error": "no result line"}
        for line in proc.stdout.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "client" in obj:
                result = obj
        result["client"] = client
        if proc.returncode and "error" not in result:
            result["error"] = f"exit {proc.returncode}"
        if "error" in result:
            result["stderr"] = proc.stderr[-3000:]
        done = _read_json_line(server, "done", 60)
        result["server_hash"] = done["hash"]
        result["server_send_s"] = done["seconds"]
        result["valid"] = "error" not in result and result.get("hash") == done["hash"]
    except subprocess.TimeoutExpired:
        result = {"client": client, "error": f"timed out after {timeout:.0f}s", "valid": False}
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            stats = _read_json_line(server, "stats", 30)["stats"]
        except (RuntimeError, TimeoutError):
            stats = {}
        server.wait(timeout=30)
    result["server_stats"] = stats
    result["transport"] = "wss" if tls else "ws"
    return result


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "txexchange-push"
    print(json.dumps(run_one(name, tls="--tls" in sys.argv, messages=20_000, timeout=60), indent=1))
