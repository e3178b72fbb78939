"""The timeline picture of a run: fault bands over throughput and errors (timeline.png).

Drawn with matplotlib's Agg backend (no display needed): fault intervals as shaded bands,
ok operations per 0.5 s above, failed and unknown ones below; a dashed line where the
workload stopped and, when it ran on past its schedule to reach ops_min, a dotted one
where the schedule ended. The report names the file
(report.TIMELINE_FILE); this module only draws it.
"""
from __future__ import annotations

import pathlib
from typing import Any, Iterable, Sequence

from shoal.chaos.history import Operation

TIMELINE_WINDOW_S = 0.5
FAULT_COLORS = {"kill": "tab:red", "crash": "darkred", "wipe": "tab:pink", "pause": "tab:purple",
                "restart": "tab:blue", "partition": "tab:brown", "loss": "tab:olive", "join": "tab:green",
                "drain": "tab:cyan"}


def throughput(operations: Iterable[Operation], window_s: float = TIMELINE_WINDOW_S) -> dict[str, list[int]]:
    """Completed operations per window, by outcome, windows from 0 to the last end."""
    ops = list(operations)
    count = int(max((op.end_s for op in ops), default=0.0) // window_s) + 1
    series = {outcome: [0] * count for outcome in ("ok", "failed", "unknown")}
    for op in ops:
        series[op.outcome][max(0, int(op.end_s // window_s))] += 1
    return series


def draw_timeline(path: pathlib.Path, operations: Sequence[Operation], faults: Sequence[dict[str, Any]],
                  *, title: str, workload_s: float = 0.0, schedule_s: float = 0.0,
                  window_s: float = TIMELINE_WINDOW_S) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = throughput(operations, window_s)
    times = [index * window_s for index in range(len(series["ok"]))]
    figure, (upper, lower) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.4]})
    try:
        upper.step(times, [n / window_s for n in series["ok"]], where="post", color="tab:green", label="ok")
        upper.set_ylabel("ok ops/s")
        lower.step(times, series["failed"], where="post", color="tab:orange", label="failed")
        lower.step(times, series["unknown"], where="post", color="tab:red", label="unknown")
        lower.set_ylabel(f"per {window_s:g} s")
        lower.set_xlabel("seconds since workload start")
        _draw_faults(upper, lower, faults, times)
        if workload_s > 0:
            for axes in (upper, lower):
                axes.axvline(workload_s, color="black", linestyle="--", linewidth=0.8)
            upper.annotate("workload stops, final reads", (workload_s, 0.5), xycoords=("data", "axes fraction"),
                           fontsize=8, rotation=90, va="center")
        if 0 < schedule_s < workload_s - window_s:
            for axes in (upper, lower):
                axes.axvline(schedule_s, color="gray", linestyle=":", linewidth=0.8)
            upper.annotate("schedule ends, workload runs on for ops_min", (schedule_s, 0.5),
                           xycoords=("data", "axes fraction"), fontsize=8, rotation=90, va="center", color="gray")
        upper.set_title(title)
        upper.legend(loc="upper right")
        lower.legend(loc="upper right")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def _draw_faults(upper: Any, lower: Any, faults: Sequence[dict[str, Any]], times: Sequence[float]) -> None:
    """One shaded band per fault that started, labelled with its name and targets."""
    for fault in faults:
        start, end = fault.get("start_s"), fault.get("end_s")
        if start is None:
            continue
        end = end if end is not None else (times[-1] if times else start)
        color = FAULT_COLORS.get(str(fault.get("kind")), "tab:gray")
        for axes in (upper, lower):
            axes.axvspan(start, end, color=color, alpha=0.18, linewidth=0)
        label = f"{fault.get('name')} [{', '.join(fault.get('targets') or [])}]"
        upper.annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                       va="top", rotation=90, color=color)
