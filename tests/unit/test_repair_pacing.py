"""Issue 18.3: repair copies back off while client write latency rises (node/replication/pacing.py).

Pure tests on a fake clock: the write-latency recorder's windows (p90, usual value, empty
windows), the AIMD rule, the pacing of the copy throttle, and the hook in ShardPrimary.submit.
No sleeps, no network: the verdicts never depend on spare CPU.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import types
from typing import Any

import pytest

from shoal.node.config import NodeConfig, load_config
from shoal.node.errors import ConfigError, NotPrimaryError
from shoal.node.replication import copy_source, pacing
from shoal.node.replication.pacing import (
    HISTORY_WINDOWS_MIN, LATENCY_SLACK_S, SAMPLES_MAX, SAMPLES_MIN, SHARE_MIN, SHARE_STEP, WINDOW_S, CopyPacing,
    LatencyWindow, WriteLatency, next_share, slow,
)
from shoal.node.replication.primary import ShardPrimary
from shoal.node.storage.entry import Put

CAP = 16 * 1024 * 1024   # repair_bytes_per_s in these tests: 1/16 of it is 1 MiB/s


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _window(latency: WriteLatency, clock: FakeClock, latency_s: float, writes: int = SAMPLES_MIN) -> None:
    """`writes` writes of `latency_s` each, then the clock moves to the next window."""
    for _ in range(writes):
        latency.record(latency_s)
    clock.now_s += WINDOW_S


def _calm_history(latency: WriteLatency, clock: FakeClock, windows: int = HISTORY_WINDOWS_MIN) -> None:
    for _ in range(windows):
        _window(latency, clock, 0.001)


def test_write_latency_windows_give_p90_and_the_usual_p90() -> None:
    """Method: 5 windows of 1 ms writes, then one with 10% of writes at 50 ms, one with 20%.
    The p90 is nearest-rank over the window's writes; the usual value (median p90 of the
    windows before) exists once HISTORY_WINDOWS_MIN windows had writes, and is 1 ms."""
    clock = FakeClock()
    latency = WriteLatency(clock=clock)
    _calm_history(latency, clock)
    for share_slow in (2, 4):     # of 20 writes: 10% and 20% at 50 ms
        for _ in range(20 - share_slow):
            latency.record(0.001)
        for _ in range(share_slow):
            latency.record(0.050)
        clock.now_s += WINDOW_S
    closed, windows = latency.windows_after(0)
    assert closed == 7 and [w.index for w in windows] == [1, 2, 3, 4, 5, 6, 7]
    assert all(w.usual_s is None for w in windows[:HISTORY_WINDOWS_MIN])
    assert windows[5] == LatencyWindow(6, 20, 0.001, 0.001)     # the 18th of 20 sorted is still 1 ms
    assert windows[6] == LatencyWindow(7, 20, 0.050, 0.001)
    assert latency.windows_after(6) == (7, [windows[6]])
    stats = latency.statistics()
    assert (stats.writes, stats.p90_s, stats.usual_s) == (5 * SAMPLES_MIN + 40, 0.050, 0.001)


def test_write_latency_counts_windows_without_enough_writes() -> None:
    """A window with fewer than SAMPLES_MIN writes, and the windows of an idle gap, are counted
    as closed but carry no latency (the pacing treats them as calm)."""
    clock = FakeClock()
    latency = WriteLatency(clock=clock)
    _window(latency, clock, 0.001)
    _window(latency, clock, 0.5, writes=SAMPLES_MIN - 1)
    clock.now_s += 10 * WINDOW_S          # idle: nothing recorded, nothing asked
    _window(latency, clock, 0.002)
    closed, windows = latency.windows_after(0)
    assert closed == 13
    assert [(w.index, w.p90_s) for w in windows] == [(1, 0.001), (13, 0.002)]


def test_write_latency_keeps_the_latest_samples_of_a_busy_window() -> None:
    """Past SAMPLES_MAX writes in a window, the latest SAMPLES_MAX give its p90 (bounded memory)."""
    clock = FakeClock()
    latency = WriteLatency(clock=clock)
    for _ in range(SAMPLES_MAX):
        latency.record(0.001)
    for _ in range(SAMPLES_MAX):
        latency.record(0.004)
    clock.now_s += WINDOW_S
    _, windows = latency.windows_after(0)
    assert [(w.writes, w.p90_s) for w in windows] == [(2 * SAMPLES_MAX, 0.004)]


def test_write_latency_records_from_many_threads() -> None:
    """8 threads record 5,000 writes each at once: none is lost (the recorder takes a lock)."""
    latency = WriteLatency()
    barrier = threading.Barrier(8)

    def writer() -> None:
        barrier.wait()
        for _ in range(5000):
            latency.record(0.001)
    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert latency.statistics().writes == 40_000


def test_slow_window_is_above_factor_times_usual_plus_slack() -> None:
    """Slow means p90 > factor x usual + LATENCY_SLACK_S; no usual value yet means not slow."""
    usual = 0.004
    at_threshold = usual * 2.0 + LATENCY_SLACK_S
    assert not slow(LatencyWindow(9, 20, at_threshold, usual), 2.0)
    assert slow(LatencyWindow(9, 20, at_threshold + 1e-6, usual), 2.0)
    assert not slow(LatencyWindow(9, 20, at_threshold + 1e-6, usual), 3.0)
    assert not slow(LatencyWindow(3, 20, 10.0, None), 2.0)
    assert not slow(LatencyWindow(9, 20, 0.0015, 0.0005), 2.0)   # 3x, but half a millisecond more: jitter


def test_next_share_halves_to_the_floor_and_grows_back_additively() -> None:
    """AIMD: each slow window halves the share, never below SHARE_MIN (1/16); each calm one adds
    SHARE_STEP (1/16) up to 1, so the floor is back at the full rate after 15 calm windows."""
    assert next_share(1.0, [True]) == 0.5
    assert next_share(1.0, [True] * 3) == 0.125
    assert next_share(1.0, [True] * 10) == SHARE_MIN
    assert next_share(SHARE_MIN, [False] * 14) == pytest.approx(15 / 16)
    assert next_share(SHARE_MIN, [False] * 15) == 1.0
    assert next_share(1.0, [False] * 5) == 1.0
    assert next_share(0.5, [False, True]) == pytest.approx((0.5 + SHARE_STEP) / 2)


def test_copy_pacing_cuts_the_rate_while_writes_are_slow_and_restores_it(caplog: pytest.LogCaptureFixture) -> None:
    """Method: a calm history at 1 ms, then 5 windows at 20 ms (copies interfering), then calm
    ones; the rate is asked once per window, as a copy's chunks would. It halves per slow
    window down to 1/16 of the cap, grows 1/16 of the cap per calm window back to the cap,
    and logs one "copies slowed" line (rate-limited) and one "copies back to the full rate"."""
    clock = FakeClock()
    latency = WriteLatency(clock=clock)
    paced = CopyPacing(latency, 2.0)
    _calm_history(latency, clock, 10)
    assert paced.rate_bytes_per_s(CAP) == CAP
    rates = []
    with caplog.at_level(logging.INFO, logger=pacing.__name__):
        for _ in range(5):
            _window(latency, clock, 0.020)
            rates.append(paced.rate_bytes_per_s(CAP))
        assert rates == [CAP // 2, CAP // 4, CAP // 8, CAP // 16, CAP // 16]
        assert paced.statistics() == pacing.PacingStatistics(SHARE_MIN, 5)
        rates = []
        for _ in range(15):
            _window(latency, clock, 0.001)
            rates.append(paced.rate_bytes_per_s(CAP))
    assert rates == [CAP // 16 * (2 + n) for n in range(15)]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"copies slowed to {CAP // 2} B/s (50% of repair_bytes_per_s): "
                                  "client write p90 20.0 ms, usual 1.0 ms")
    assert messages[1] == f"copies back to the full rate ({CAP} B/s): client write latency is usual again"


def test_copy_pacing_replays_the_windows_between_two_chunks() -> None:
    """A copy asking rarely (a slow chunk) gets the same rate as one asking every window:
    every window closed since the last call is judged, in order."""
    clock = FakeClock()
    often, rarely = WriteLatency(clock=clock), WriteLatency(clock=clock)
    every, seldom = CopyPacing(often, 2.0), CopyPacing(rarely, 2.0)
    pattern = [0.001] * 8 + [0.030, 0.030, 0.001, 0.030, 0.001, 0.001]
    for latency_s in pattern:
        for _ in range(SAMPLES_MIN):
            often.record(latency_s)
            rarely.record(latency_s)
        clock.now_s += WINDOW_S
        every.rate_bytes_per_s(CAP)
    assert seldom.rate_bytes_per_s(CAP) == every.rate_bytes_per_s(CAP) == int(CAP * next_share(1.0, [
        False] * 8 + [True, True, False, True, False, False]))


def test_copy_pacing_is_off_when_unlimited_or_disabled() -> None:
    """repair_bytes_per_s 0 stays unlimited and factor 0 never paces, however slow the writes."""
    clock = FakeClock()
    latency = WriteLatency(clock=clock)
    _calm_history(latency, clock)
    for _ in range(4):
        _window(latency, clock, 1.0)
    assert CopyPacing(latency, 2.0).rate_bytes_per_s(0) == 0
    assert CopyPacing(latency, 0).rate_bytes_per_s(CAP) == CAP
    assert CopyPacing(latency, 2.0).rate_bytes_per_s(CAP) == CAP // 16


def test_throttle_sleeps_at_the_paced_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Throttle.pay with pacing charges bytes at the rate pacing allows: one second of the
    cap's bytes costs 16 s at the floor (the sleep is recorded, not slept)."""
    slept: list[float] = []

    async def fake_sleep(delay_s: float) -> None:
        slept.append(delay_s)
    monkeypatch.setattr(copy_source.time, "monotonic", lambda: 50.0)
    monkeypatch.setattr(copy_source.asyncio, "sleep", fake_sleep)
    floor = types.SimpleNamespace(rate_bytes_per_s=lambda cap: cap // 16)
    throttle = copy_source.Throttle(1024)
    _run_to_end(throttle.pay(2048, floor))   # type: ignore[arg-type]
    assert slept == [pytest.approx(2048 / 64 - 1.0)]   # minus the one-second burst
    unpaced = copy_source.Throttle(1024)
    slept.clear()
    _run_to_end(unpaced.pay(2048))
    assert slept == [pytest.approx(1.0)]


def test_primary_submit_records_the_write_latency() -> None:
    """The hook: ShardPrimary.submit records one latency per acknowledged write, none for a failed one."""
    latency = WriteLatency()
    context = types.SimpleNamespace(write_latency=latency)

    async def run() -> None:
        primary = ShardPrimary(types.SimpleNamespace(dataset="ds", index=0), context,  # type: ignore[arg-type]
                               epoch=1, backups=[])
        ok = asyncio.ensure_future(primary.submit(Put(b"k", b"v"), 2))
        failed = asyncio.ensure_future(primary.submit(Put(b"k", b"w"), 2))
        await asyncio.sleep(0)
        primary._queue.get_nowait()[2].set_result(True)
        primary._queue.get_nowait()[2].set_exception(NotPrimaryError("gone"))
        assert await ok is True
        with pytest.raises(NotPrimaryError):
            await failed

    asyncio.run(run())
    assert latency.statistics().writes == 1


def test_config_repair_pacing_latency_factor_is_zero_or_above_one(tmp_path: Any) -> None:
    """0 turns pacing off, a factor above 1 is a multiple of the usual latency; 1 or less is refused;
    SHOAL_REPAIR_PACING_LATENCY_FACTOR sets it."""
    base = NodeConfig(node_id="n1", data_dir=tmp_path).validate()
    assert base.repair_pacing_latency_factor == 2.0
    for good in (0.0, 1.5, 10.0):
        assert dataclasses.replace(base, repair_pacing_latency_factor=good).validate().repair_pacing_latency_factor \
            == good
    for bad in (1.0, 0.5, -2.0, float("nan")):
        with pytest.raises(ConfigError, match="repair_pacing_latency_factor"):
            dataclasses.replace(base, repair_pacing_latency_factor=bad).validate()
    config = load_config({"node_id": "n1", "data_dir": str(tmp_path)},
                         environ={"SHOAL_REPAIR_PACING_LATENCY_FACTOR": "3"})
    assert config.repair_pacing_latency_factor == 3.0


def _run_to_end(coroutine: Any) -> None:
    """Drive a coroutine whose awaits all complete at once (the fake sleep)."""
    with pytest.raises(StopIteration):
        coroutine.send(None)
