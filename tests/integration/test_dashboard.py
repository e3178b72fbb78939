"""Issue 20: the web dashboard, looked at in a real browser (headless Debian chromium via selenium).

A 3-node cluster of real processes (LocalCluster: every node serves the dashboard on its
HTTP port), a dataset with replication 2 (so a third node can take the copy of a lost
one), a job, and one chaos report in the cluster's chaos folder. The page is opened on
the node that will be killed, so one kill checks both things at once: the page says
which node it lost and goes on reading from another node, and it shows the node dead,
the repair copying (the send rate is throttled so the copy lasts a few poll rounds) and
then the data fully redundant again. Screenshots of every page go to the artifacts dir:
$SHOAL_TEST_ARTIFACTS/dashboard, default test-artifacts/dashboard in the repo (ignored by git).

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`),
installed by a session fixture when missing; a failed install fails the test, it is not
skipped. Waits poll the page with a deadline; on expiry the node logs are attached.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shoal.client.local import LocalCluster

REPO = pathlib.Path(__file__).resolve().parents[2]
APT_PACKAGES = ("chromium", "chromium-driver")
APT_TIMEOUT_S = 900
PAGE_WAIT_S = 20.0
RECORDS = 9_000
ENV = {"SHOAL_HEARTBEAT_INTERVAL_S": "0.2", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_SUSPECT_AFTER_S": "1.0",
       "SHOAL_NODE_DEAD_AFTER_S": "3.6", "SHOAL_REPLICATE_TIMEOUT_S": "1.0",
       # ~330 KB per shard at 100 kB/s in 64 KiB chunks: each copy lasts several of the page's polls
       "SHOAL_REPAIR_BYTES_PER_S": "100000", "SHOAL_SCAN_CHUNK_BYTES_MAX": "65536",
       "SHOAL_REPAIR_PACING_LATENCY_FACTOR": "0"}


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """(chromium binary, chromedriver binary), installed from Debian when missing."""
    def found() -> tuple[str | None, str | None]:
        return shutil.which("chromium"), shutil.which("chromedriver")

    browser, driver = found()
    if browser is None or driver is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        steps = (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES])
        for step in steps:
            try:
                done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                pytest.fail(f"cannot install {' '.join(APT_PACKAGES)} for the browser test: {' '.join(step)}: {exc}")
            if done.returncode != 0:
                pytest.fail(f"cannot install {' '.join(APT_PACKAGES)} for the browser test: {' '.join(step)} "
                            f"exited {done.returncode}:\n{done.stderr[-2000:]}")
        browser, driver = found()
    if browser is None or driver is None:
        pytest.fail(f"{' '.join(APT_PACKAGES)} installed, but chromium or chromedriver is not on PATH")
    return browser, driver


@pytest.fixture
def artifacts() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("SHOAL_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: pathlib.Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromium[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def write_chaos_report(folder: pathlib.Path) -> None:
    """One report in the real format (chaos/report.py), from a made-up 12 s history with a kill."""
    from shoal.chaos.history import Operation
    from shoal.chaos.report import CheckResult, RunReport, write_report

    operations = [Operation(process=i % 4, kind="write", key=f"k{i % 50}", input=i, output=None,
                            outcome="unknown" if 5.0 <= i / 100 < 5.4 else "ok", start_s=i / 100, end_s=i / 100 + 0.01)
                  for i in range(1200)]
    report = RunReport(scenario="dashboard-example", seed=20, started_at="2026-01-01T00:00:00Z", duration_s=12.0,
                       workload_s=12.0, schedule_s=12.0, ops_by_outcome={"ok": 1160, "unknown": 40},
                       checks=[CheckResult("no_lost_writes", True, "all 1160 acknowledged writes read back"),
                               CheckResult("replication_restored", True, "R=2 again 6.1 s after the kill")],
                       faults=[{"name": "kill", "target": "n2", "start_s": 5.0, "end_s": 5.4}])
    write_report(folder, report, operations)


def test_dashboard_shows_a_killed_node_dead_and_its_repair(
        local_cluster: Callable[..., LocalCluster], browser: Any, artifacts: pathlib.Path) -> None:
    """The page, served by the node that is then killed, names the lost node, reads on from another,
    shows the node dead and its shards' copies under way, then the data fully redundant again.

    Method: 3 nodes, dataset kv (4 shards, R=2, 9,000 records), one query job, one chaos
    report; open the dashboard on a replica holder that is not the controller, look at every
    tab (screenshots), kill -9 that node, poll the page's DOM for the banner, the dead state,
    a copy row in "Repairs in progress", and the safe state.
    """
    from selenium.webdriver.common.by import By

    cluster = local_cluster(3, env=ENV)
    started_s = time.monotonic()
    with cluster.client(timeout_s=15) as client:
        client.create_dataset("kv", shards=4, replication=2)
        client.put_many("kv", ((f"k{i:06d}", {"i": i, "pad": "p" * 120}) for i in range(RECORDS)))
        client.query("kv").where("i > 100").group_by("i").agg(n=("count", None)).limit(5).submit().wait()
        controller = str(client.status()["controller"])
    write_chaos_report(cluster.data_dir / "chaos" / "example-run")
    shard_map = {d.name: d for d in cluster.cluster_map().datasets}["kv"].shard_map
    victim = sorted({node for shard in shard_map for node in shard.replicas} - {controller})[0]
    page = f"http://{cluster.node(victim).http_address}/"

    def wait_page(what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + PAGE_WAIT_S
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)   # the page polls every 1.5 s: look again shortly
        browser.save_screenshot(str(artifacts / "timeout.png"))
        pytest.fail(f"dashboard never showed {what} within {PAGE_WAIT_S} s; page text:\n"
                    f"{browser.find_element(By.TAG_NAME, 'body').text[:3000]}\n\nnode logs:\n{cluster.dump_logs(40)}")

    def js(script: str) -> Any:
        return browser.execute_script(script)

    def node_state(node_id: str) -> str:
        return str(js(f"const r = document.querySelector('#nodes tr[data-node=\"{node_id}\"]'); "
                      "return r ? r.dataset.state : '';"))

    def safety() -> str:
        return str(js("return document.getElementById('safety').dataset.state;"))

    def tab(name: str, ready_selector: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab='{name}']").click()
        wait_page(f"the {name} tab", lambda: bool(js(f"return document.querySelector(\"{ready_selector}\") !== null;")))
        browser.save_screenshot(str(artifacts / f"2-{name}.png"))

    browser.get(page)
    wait_page("3 alive nodes, data safe", lambda: safety() == "safe" and
              all(node_state(n.id) == "alive" for n in cluster.nodes))
    browser.save_screenshot(str(artifacts / "1-overview.png"))
    tab("shards", "#tab-shards tr[data-shard='kv/3']")
    tab("jobs", "#jobs-table tr[data-job]")
    tab("chaos", "#chaos-detail img.timeline")
    wait_page("the timeline picture loaded",
              lambda: bool(js("const i = document.querySelector('#chaos-detail img.timeline'); "
                              "return i.complete && i.naturalWidth > 0;")))
    browser.save_screenshot(str(artifacts / "2-chaos.png"))
    tab("overview", "#nodes tr[data-node]")

    cluster.kill(victim)
    killed_s = time.monotonic()
    wait_page(f"that it lost {victim}", lambda: f"Lost contact with {victim}" in browser.find_element(
        By.ID, "banner-text").text and not js("return document.getElementById('banner').hidden;"))
    wait_page(f"{victim} dead", lambda: node_state(victim) == "dead")
    wait_page("a copy under way", lambda: bool(js("return document.querySelector('#overview-copies tr.copy') !== null;")))
    browser.save_screenshot(str(artifacts / "3-repairing.png"))
    assert safety() in ("repairing", "waiting"), safety()
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab='repairs']").click()
    wait_page("the repairs tab", lambda: bool(js("return document.querySelector('#copies tr') !== null "
                                                  "|| document.getElementById('safety').dataset.state === 'safe';")))
    browser.save_screenshot(str(artifacts / "3-repairs-tab.png"))
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab='overview']").click()
    wait_page("the data fully redundant again", lambda: safety() == "safe")
    browser.save_screenshot(str(artifacts / "4-redundant-again.png"))
    events = browser.find_element(By.ID, "events").text
    assert f"{victim}: alive → dead" in events, events
    print(f"dashboard test: cluster up to kill {killed_s - started_s:.1f} s, kill to redundant "
          f"{time.monotonic() - killed_s:.1f} s; screenshots in {artifacts}")
