"""The chaos reports the dashboard shows: `shoal chaos run --report DIR` folders under one root.

The root is `config.chaos_reports_dir`, or `data_dir/../chaos` when that is empty (for
`shoal up`, DATA_DIR/chaos: beside the node folders). Each report is a folder directly
under the root holding `report.json` (chaos/report.py, the format in chaos/DESIGN.md) and
usually `timeline.png`; the root itself counts too when it holds a report.json.

Safe by construction: a request names a report by its folder name, which must match
REPORT_NAME (no separators, no leading dot) and be one of the folders listed now; only the
two file names below are ever served, and a symlink that leads out of the root is refused.
Files are read in the node's blocking executor (the caller's job), and a report.json past
REPORT_BYTES_MAX is summarised as unreadable instead of parsed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig

logger = logging.getLogger(__name__)

REPORT_FILE: Final = "report.json"       # chaos/report.py REPORT_FILE
TIMELINE_FILE: Final = "timeline.png"    # chaos/report.py TIMELINE_FILE
ROOT_NAME: Final = "."                   # the name of a report written straight into the root
REPORT_NAME: Final = re.compile(r"^(\.|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
REPORTS_LISTED_MAX: Final = 20           # newest first; older ones are not shown
REPORT_BYTES_MAX: Final = 8 * 1024 * 1024
TIMELINE_BYTES_MAX: Final = 8 * 1024 * 1024


def reports_root(config: NodeConfig) -> pathlib.Path:
    """The folder the dashboard lists reports from (see the module docstring)."""
    if config.chaos_reports_dir:
        return pathlib.Path(config.chaos_reports_dir)
    return pathlib.Path(config.data_dir).resolve().parent / "chaos"


@dataclasses.dataclass(frozen=True, slots=True)
class ReportSummary:
    name: str                 # folder name under the root ("." for the root itself)
    modified_at_s: float      # unix time report.json was written
    report: dict[str, Any]    # the fields the list shows (see summarise)
    has_timeline: bool


def list_reports(root: pathlib.Path) -> list[ReportSummary]:
    """Blocking: the newest REPORTS_LISTED_MAX reports under root; [] when root does not exist."""
    found = []
    for name, folder in _report_folders(root):
        path = folder / REPORT_FILE
        try:
            modified_at_s = path.stat().st_mtime
        except OSError:
            continue
        found.append((modified_at_s, name, folder))
    found.sort(reverse=True)
    return [ReportSummary(name, modified_at_s, summarise(_read_json(folder / REPORT_FILE)),
                          (folder / TIMELINE_FILE).is_file())
            for modified_at_s, name, folder in found[:REPORTS_LISTED_MAX]]


def read_report(root: pathlib.Path, name: str) -> dict[str, Any] | None:
    """Blocking: the whole report.json of report `name`; None if there is no such report."""
    folder = _folder(root, name)
    return None if folder is None else _read_json(folder / REPORT_FILE)


def read_timeline(root: pathlib.Path, name: str) -> bytes | None:
    """Blocking: the timeline.png bytes of report `name`; None if absent or too large."""
    folder = _folder(root, name)
    if folder is None:
        return None
    path = folder / TIMELINE_FILE
    try:
        if not _inside(root, path) or path.stat().st_size > TIMELINE_BYTES_MAX:
            return None
        return path.read_bytes()
    except OSError:
        return None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The fields the report list shows; the failed checks by name with their one-line summary."""
    checks = report.get("checks") if isinstance(report.get("checks"), dict) else {}
    failed = {name: str(entry.get("summary", "")) for name, entry in (checks or {}).items()
              if isinstance(entry, dict) and not entry.get("passed")}
    return {"verdict": report.get("verdict", "unknown"), "scenario": report.get("scenario", ""),
            "seed": report.get("seed"), "ops": report.get("ops"), "started_at": report.get("started_at", ""),
            "duration_s": report.get("duration_s"), "checks": len(checks or {}), "failed_checks": failed,
            "error": report.get("error", "") or report.get("unreadable", "")}


def _report_folders(root: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    folders = [(ROOT_NAME, root)]
    try:
        folders += [(child.name, child) for child in root.iterdir()
                    if REPORT_NAME.match(child.name) and child.name != ROOT_NAME and child.is_dir()]
    except OSError:   # no such folder (no chaos run yet) or unreadable: nothing to list
        return []
    return [(name, folder) for name, folder in folders
            if (folder / REPORT_FILE).is_file() and _inside(root, folder / REPORT_FILE)]


def _folder(root: pathlib.Path, name: str) -> pathlib.Path | None:
    """The folder of report `name`, only if it is one that list_reports would list."""
    if not REPORT_NAME.match(name):
        return None
    return dict(_report_folders(root)).get(name)


def _inside(root: pathlib.Path, path: pathlib.Path) -> bool:
    """path, symlinks resolved, lies inside root (resolved): a link out of the root is refused."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > REPORT_BYTES_MAX:
            return {"unreadable": f"{path.name} is larger than {REPORT_BYTES_MAX} bytes"}
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:   # a run still writing it, or a broken file: say so, list the rest
        return {"unreadable": f"cannot read {path.name}: {exc}"}
    return data if isinstance(data, dict) else {"unreadable": f"{path.name} is not a JSON object"}
