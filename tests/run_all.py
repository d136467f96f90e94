"""The project's test command: lint, build the docs warning-free, run the test suite.

Run as ``python tests/run_all.py [pytest args...]`` from the repository root
(after ``pip install -e '.[test]'``); CI runs exactly this through ``.ci/run``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(title: str, cmd: list[str]) -> None:
    print(f"== {title}: {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, cwd=ROOT, check=False)
    if result.returncode != 0:
        print(f"== {title} failed (exit {result.returncode})", flush=True)
        sys.exit(result.returncode)


def main() -> None:
    py = sys.executable
    linted = ["setup.py", "txexchange", "tests", "examples", "twisted", "bench"]
    step("ruff", [py, "-m", "ruff", "check", *linted])
    with tempfile.TemporaryDirectory() as out:
        step("docs", [py, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", out])
    cmd = [py, "-m", "pytest", "-p", "no:cacheprovider", "--timeout=120", *sys.argv[1:]]
    print(f"== tests: {' '.join(cmd)}", flush=True)
    sys.exit(subprocess.run(cmd, cwd=ROOT, check=False).returncode)


if __name__ == "__main__":
    main()
