"""Issue 19 point 3: bandit finds no medium- or high-severity issue in the shipped code.

Runs the pinned bandit (test extra) over node/, client/ and chaos/ (the generated gRPC
stubs excluded) in a subprocess, as CI would run it by hand.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bandit_reports_no_medium_or_high_severity_issue() -> None:
    result = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", "node", "client", "chaos",
                             "-x", "client/wire/pb", "--severity-level", "medium"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
