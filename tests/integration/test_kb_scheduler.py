"""The KnowledgeBase sync scheduler and its cross-process run lock.

Real: KnowledgeBaseSync over LocalFiles folders and ``git`` repositories made here, the
embedded default Memory with the local MiniLM model, ``filelock`` held by a second Python
process, the ``aof-index kb sync`` CLI. What is controlled: a run is held at its start by
the scheduler's ``exclusive`` lock (the same lock ``kb serve`` uses to serialise
KnowledgeBases sharing a Memory) so that requests reliably arrive during it, and the cron
test runs the scheduler on a clock 60 times faster than real time (one cron minute per real
second) so that it needs no real minutes.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.knowledge.runlock import SyncBusyError, lock_path, run_lock
from aof_index.knowledge.scheduler import SyncScheduler
from aof_index.knowledge.sync import open_sync

pytestmark = pytest.mark.slow

runner = CliRunner()
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}
HOLD_LOCK = (
    "import sys\n"
    "from filelock import FileLock\n"
    "lock = FileLock(sys.argv[1])\n"
    "lock.acquire()\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "lock.release()\n"
)


def make_kb(root: Path, *, sources: tuple[str, ...] = ("files",), extra: str = "") -> Path:
    """A KnowledgeBase with one LocalFiles folder (one small Markdown file) per source."""
    lines = []
    for name in sources:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / f"{name}.md").write_text(
            f"# {name}\n\nThe {name} runbook explains how to check {name} alerts.\n"
        )
        lines.append(f"    - {{name: {name}, type: LocalFiles, localFiles: {{paths: [{name}]}}}}\n")
    manifest = root / "kb.yaml"
    manifest.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: ops}\nspec:\n  sources:\n" + "".join(lines) + extra
    )
    return manifest


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


@pytest.fixture
def schedulers() -> Iterator[list[SyncScheduler]]:
    """Schedulers a test starts; stopped at the end whatever happens."""
    started: list[SyncScheduler] = []
    yield started
    for scheduler in started:
        scheduler.stop(timeout=120)


class FastClock:
    """Wall time running ``speed`` times faster from ``start``; waits shortened to match."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start.timestamp()
        self.speed = speed
        self.t0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self.t0) * self.speed

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        return event.wait(None if seconds is None else seconds / self.speed)


class FrozenClock:
    """Always the same time; waits are real (and end when the scheduler is woken)."""

    def __init__(self, at: datetime) -> None:
        self.at = at.timestamp()

    def now(self) -> float:
        return self.at

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        return event.wait(seconds)


def test_requests_during_a_run_coalesce_into_one_follow_up(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    kb = open_sync(make_kb(tmp_path, sources=("files", "notes", "extra")))
    gate = threading.Lock()
    gate.acquire()
    scheduler = SyncScheduler(kb, on_startup=False, exclusive=gate)
    schedulers.append(scheduler)
    scheduler.start()
    scheduler.request(["files"], reason="first")
    wait_until(lambda: scheduler.running)
    # Run 1 has started (held at the gate): these three arrive during it.
    scheduler.request(["notes"], reason="second")
    scheduler.request(["files"], reason="third", mode="full")
    scheduler.request(["notes"], reason="fourth")
    assert scheduler.running and scheduler.runs == 0
    gate.release()
    scheduler.wait_for_run(after=1, timeout=120)
    first, second = scheduler.history
    assert (first.reason, first.sources, first.mode) == ("first", ("files",), "incremental")
    assert first.ok and first.report is not None and first.report.added == 1
    assert second.number == 2
    assert second.reason == "second; third; fourth"
    assert second.sources == ("files", "notes")  # the union; `extra` was never asked for
    assert second.mode == "full"  # the strongest mode asked for
    assert second.report is not None
    assert [s.name for s in second.report.sources] == ["files", "notes"]
    assert second.report.added == 1 and second.report.updated == 1  # notes new, files redone
    assert scheduler.pending is None  # nothing left for a third run
    assert scheduler.stop(timeout=60)
    assert scheduler.runs == 2 and not scheduler.alive


def test_unknown_source_or_mode_is_refused_at_request_time(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    from aof_index.errors import ManifestError

    kb = open_sync(make_kb(tmp_path))
    scheduler = SyncScheduler(kb, on_startup=False)
    with pytest.raises(ManifestError, match="no source named 'nope'; sources: files"):
        scheduler.request(["nope"], reason="test")
    with pytest.raises(ValueError, match="mode must be one of differential, full, incremental"):
        scheduler.request(reason="test", mode="fast")  # type: ignore[arg-type]
    assert scheduler.pending is None


def test_run_lock_held_by_another_process_defers_the_run(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    manifest = make_kb(tmp_path)
    kb = open_sync(manifest)
    path = lock_path(kb)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    scheduler = SyncScheduler(kb, busy_retry=0.2)  # onStartup defaults to true
    schedulers.append(scheduler)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        scheduler.start()
        wait_until(lambda: scheduler.deferred >= 2)  # retried, still refused
        assert scheduler.runs == 0
        assert kb.state.last_run() is None  # the sync never started: no overlap
        assert scheduler.pending is not None and scheduler.pending.reasons == ("startup",)

        with pytest.raises(SyncBusyError) as busy, run_lock(kb, wait=0.3):
            pass
        assert "ops" in str(busy.value) and str(path) in str(busy.value)
        assert busy.value.lock_file == path and busy.value.waited == pytest.approx(0.3)

        result = runner.invoke(app, ["kb", "sync", str(manifest)])
        assert result.exit_code == 1, result.output
        assert "default/ops is already being synced by another process" in result.output
        assert str(path) in result.output
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    record = scheduler.wait_for_run(after=0, timeout=120)
    assert record.reason == "startup" and record.ok
    assert record.report is not None and record.report.added == 1
    assert scheduler.deferred >= 2 and scheduler.runs == 1
    # and the CLI syncs again once the lock is free
    result = runner.invoke(app, ["kb", "sync", str(manifest), "--json"])
    assert result.exit_code == 0, result.output


def test_cron_fires_on_schedule_and_fires_during_a_run_coalesce(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    kb = open_sync(
        make_kb(tmp_path, extra="  indexing:\n    schedule: {type: cron, cron: '* * * * *'}\n")
    )
    start = datetime(2026, 1, 1, 11, 59, 30, tzinfo=UTC)
    gate = threading.Lock()
    gate.acquire()
    scheduler = SyncScheduler(
        kb, on_startup=False, jitter=0, exclusive=gate, clock=FastClock(start, speed=60)
    )
    schedulers.append(scheduler)
    assert scheduler.schedule == "cron"
    scheduler.start()
    assert scheduler.next_run == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert "cron '* * * * *', next run 2026-01-01 12:00:00 UTC (jitter 0 s)" in scheduler.describe()
    wait_until(lambda: scheduler.running)  # the 12:00 fire, ~0.5 s of real time later
    time.sleep(3.5)  # hold the run through three or four more fires (one a real second)
    gate.release()
    scheduler.wait_for_run(after=1, timeout=120)
    first, second = scheduler.history[:2]
    assert first.reason == "cron" and first.ok
    # the fires that came during run 1 made one follow-up run, not one each
    assert second.reason == "cron" and second.ok
    assert second.started >= first.finished  # never overlapping
    assert scheduler.stop(timeout=60)


def test_cron_jitter_defaults_to_ten_percent_of_the_interval_at_most_a_minute(
    tmp_path: Path,
) -> None:
    kb = open_sync(make_kb(tmp_path))
    at = FrozenClock(datetime(2026, 1, 1, 11, 30, tzinfo=UTC))
    noon = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def first_fire(cron: str, jitter: float | None, seed: int) -> timedelta:
        scheduler = SyncScheduler(
            kb,
            schedule="cron",
            cron=cron,
            on_startup=False,
            jitter=jitter,
            clock=at,
            rng=random.Random(seed),
        )
        scheduler.start()
        try:
            assert scheduler.next_run is not None
            return scheduler.next_run - noon
        finally:
            assert scheduler.stop(timeout=10)

    every_5_min = [first_fire("*/5 * * * *", None, seed) for seed in range(12)]
    assert all(
        timedelta(0) <= d - timedelta(minutes=-25) <= timedelta(seconds=30) for d in every_5_min
    )
    hourly = [first_fire("0 * * * *", None, seed) for seed in range(12)]
    assert all(timedelta(0) <= d <= timedelta(seconds=60) for d in hourly)
    assert len(set(hourly)) > 1  # drawn, not fixed
    assert {first_fire("0 * * * *", 0, seed) for seed in range(3)} == {timedelta(0)}
    assert all(
        timedelta(0) <= first_fire("0 * * * *", 5, seed) <= timedelta(seconds=5)
        for seed in range(5)
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=GIT_ENV, capture_output=True)


def test_continuous_polls_back_off_on_failure_and_reset_on_success(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    repo = tmp_path / "repo"  # does not exist yet: every sync fails
    manifest = tmp_path / "kb.yaml"
    manifest.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: ops}\nspec:\n  sources:\n"
        f"    - {{name: repo, type: Git, git: {{url: 'file://{repo}', ref: main}}}}\n"
        "  indexing:\n    schedule: {type: continuous}\n"
    )
    kb = open_sync(manifest)
    scheduler = SyncScheduler(kb, interval=0.2, max_backoff=0.8)
    schedulers.append(scheduler)
    scheduler.start()
    scheduler.wait_for_run(after=2, timeout=60)
    history = scheduler.history
    assert [r.reason for r in history[:3]] == ["startup", "poll", "poll"]
    assert all(not r.ok and r.report is not None and r.report.failed == ["repo"] for r in history)
    assert [r.next_delay for r in history[:3]] == [0.4, 0.8, 0.8]  # x2, capped

    staged = tmp_path / "staged"  # made aside, then moved into place in one rename
    staged.mkdir()
    git(staged, "init", "-q", "-b", "main")
    (staged / "etcd.md").write_text("# etcd\n\nThe etcd runbook: defragment when the db is full.\n")
    git(staged, "add", "-A")
    git(staged, "commit", "-q", "-m", "add")
    staged.rename(repo)
    wait_until(lambda: scheduler.last_run is not None and scheduler.last_run.ok, timeout=120)
    ok = scheduler.last_run
    assert ok is not None and ok.reason == "poll" and ok.mode == "incremental"
    assert ok.report is not None and ok.report.documents == 1
    assert ok.next_delay == 0.2  # back to the interval
    assert scheduler.delay == 0.2
    failures = [r for r in scheduler.history if r.number < ok.number]
    assert all(not r.ok for r in failures)
    assert all(r.next_delay == min(0.2 * 2**r.number, 0.8) for r in failures)

    repo.rename(tmp_path / "gone")  # fails again: the backoff starts over from the interval
    wait_until(lambda: scheduler.last_run is not None and not scheduler.last_run.ok, timeout=60)
    again = scheduler.last_run
    assert again is not None and again.next_delay == 0.4


@pytest.mark.parametrize("on_startup", [True, False])
def test_on_startup(tmp_path: Path, schedulers: list[SyncScheduler], on_startup: bool) -> None:
    extra = "" if on_startup else "  sync: {onStartup: false}\n"  # true is the default
    kb = open_sync(make_kb(tmp_path, extra=extra))
    scheduler = SyncScheduler(kb)
    schedulers.append(scheduler)
    assert scheduler.on_startup is on_startup and scheduler.schedule == "manual"
    scheduler.start()
    if on_startup:
        record = scheduler.wait_for_run(after=0, timeout=120)
        assert record.reason == "startup" and record.ok
        assert record.report is not None and record.report.added == 1
    else:
        time.sleep(1.0)
        assert scheduler.runs == 0 and not scheduler.running and scheduler.pending is None
        assert scheduler.next_run is None and kb.state.last_run() is None
        scheduler.request(reason="manual")
        record = scheduler.wait_for_run(after=0, timeout=120)
        assert record.reason == "manual" and record.ok


def test_a_raising_run_is_kept_and_the_worker_goes_on(
    tmp_path: Path, schedulers: list[SyncScheduler]
) -> None:
    kb = open_sync(make_kb(tmp_path))
    # A real failure below the sources: the KnowledgeBase's data folder is a file, so the
    # run can open neither its lock nor its state and raises.
    state_dir = kb.state.path.parent
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    state_dir.write_text("not a folder")
    scheduler = SyncScheduler(kb)
    schedulers.append(scheduler)
    scheduler.start()
    record = scheduler.wait_for_run(after=0, timeout=120)
    assert record.report is None and record.error is not None and not record.ok
    assert scheduler.alive
    state_dir.unlink()
    scheduler.request(reason="retry")
    record = scheduler.wait_for_run(after=1, timeout=120)
    assert record.ok and record.report is not None and record.report.added == 1
