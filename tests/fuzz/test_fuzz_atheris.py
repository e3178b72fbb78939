"""Fuzz targets 1-3 under atheris (issue 19.7): coverage-guided, with --fuzz-seconds only.

Runs fuzz_atheris.py once per target (commands, expressions, spec, entry, record, chunk) in a
subprocess for --fuzz-seconds, with a per-input timeout: libFuzzer's bytes become inputs of
the same checks the hypothesis targets assert (fuzz_targets.py). Asserts that the run ends
without a crash (an uncaught exception, a hang past the timeout, memory past the limit);
the failure shows atheris' traceback and where the crashing input was written. Skipped in
CI (no --fuzz-seconds) and when atheris is not installed (pip install atheris).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).with_name("fuzz_atheris.py")
TARGETS = ("commands", "expressions", "spec", "entry", "record", "chunk")
INPUT_TIMEOUT_S = 20        # one input slower than this is a hang (a crash for libFuzzer)
RSS_LIMIT_MB = 2048
EXIT_GRACE_S = 120.0        # start-up, instrumentation and the final report, past the fuzzing time


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_atheris_target_does_not_crash(target: str, fuzz: Any, tmp_path: Path) -> None:
    """libFuzzer drives one target for --fuzz-seconds; the process must end cleanly (exit 0)."""
    if fuzz.seconds <= 0:
        pytest.skip("atheris runs only with --fuzz-seconds")
    pytest.importorskip("atheris")
    seconds = max(1, round(fuzz.seconds))
    command = [sys.executable, str(RUNNER), target, str(tmp_path / "corpus"), f"-max_total_time={seconds}",
               f"-timeout={INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-artifact_prefix={tmp_path}/",
               "-print_final_stats=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + EXIT_GRACE_S, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"atheris {target} crashed (exit {done.returncode}):\n{output[-6000:]}"
    runs = re.search(r"Done (\d+) runs in (\d+) second", output)
    fuzz.reports.append(f"atheris.{target}: {runs.group(1) if runs else '?'} runs in "
                        f"{runs.group(2) if runs else '?'} s, no crash")
