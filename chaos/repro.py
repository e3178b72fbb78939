"""The repro folder of a failed run: everything needed to replay and debug it.

`DIR/repro/` holds `seed`, `scenario.toml`, `history.jsonl`, `logs/nK.log`,
`logs-tail.txt`, `data/cluster/` (every node's data dir as the run left it) and a README
with the replay command `shoal chaos run repro/scenario.toml --seed N`.
"""
from __future__ import annotations

import pathlib
import shutil


def write_repro(report_dir: pathlib.Path, scenario_text: str, scenario_name: str, seed: int,
                work_dir: pathlib.Path, logs: str) -> pathlib.Path:
    """The folder to reproduce a failure: seed, scenario, history, node logs, data dirs.

    The cluster's data dir (with every node's node.log) is moved, not copied: it is on the
    same file system, and LMDB files can be large.
    """
    repro = report_dir / "repro"
    repro.mkdir(parents=True, exist_ok=True)
    (repro / "seed").write_text(f"{seed}\n")
    (repro / "scenario.toml").write_text(scenario_text)
    history = report_dir / "history.jsonl"
    if history.exists():
        shutil.copyfile(history, repro / "history.jsonl")
    (repro / "logs-tail.txt").write_text(logs or "(no log tails collected)\n")
    if work_dir.exists():
        shutil.move(str(work_dir), str(repro / "data"))
        for log in (repro / "data").glob("cluster/*/node.log"):
            (repro / "logs").mkdir(exist_ok=True)
            shutil.copyfile(log, repro / "logs" / f"{log.parent.name}.log")
    (repro / "README").write_text(
        f"Reproduce: shoal chaos run {repro / 'scenario.toml'} --seed {seed}\n"
        f"scenario: {scenario_name}\nlogs/: every node's log; data/cluster/: the data dirs as the run left them;\n"
        "history.jsonl: every client operation (chaos/history.py format).\n")
    return repro
