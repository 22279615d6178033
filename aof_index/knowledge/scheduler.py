"""Run a KnowledgeBase's syncs on its schedule: cron, continuous polling, on startup, on request.

A :class:`SyncScheduler` drives one :class:`~aof_index.knowledge.sync.KnowledgeBaseSync` from
one background thread (syncs are blocking and CPU-bound; one worker per KnowledgeBase keeps
them simple and never runs two of the same KnowledgeBase at once). What starts a run:

- ``spec.sync.onStartup`` (default true): one sync when the scheduler starts.
- ``spec.indexing.schedule.type: cron``: at each time the ``cron`` expression gives (in UTC),
  plus a random **jitter** so that many KnowledgeBases (or replicas) on the same schedule do
  not all hit their sources at the same second. The jitter is drawn afresh for each fire,
  uniformly between 0 and ``jitter`` seconds; by default ``jitter`` is
  ``min(60 s, 10% of the schedule's interval)`` (6 s for every minute, 30 s for every five
  minutes, 60 s for every ten minutes or longer). A fire that comes while a run is in
  progress does not start a second one: it is merged into one follow-up run, and fires
  missed during a long run are not replayed.
- ``continuous``: an incremental sync every ``interval`` seconds (default 60) after the end of
  the previous run. Listing a source is cheap when nothing changed (a no-change sync of the
  benchmark KnowledgeBase takes 0.09 s, ``docs/benchmarks.md``), so polling costs little. A
  failed run (a source failed, or the sync raised) doubles the wait, up to ``max_backoff``
  (default 15 min); a successful run resets it to ``interval``.
- ``manual`` and ``webhook``: only :meth:`SyncScheduler.request` (the CLI, the HTTP API, a
  webhook receiver). Every schedule type accepts requests too.

Requests that arrive while a run is in progress are coalesced into one follow-up run: the
union of their sources (``None``, all sources, absorbs any list) with the strongest of their
modes (``full`` over ``differential`` over ``incremental``). Across processes, each run holds
the KnowledgeBase's run lock (:mod:`aof_index.knowledge.runlock`); when another process holds
it the run is deferred, logged, and retried every ``busy_retry`` seconds; the request is kept,
never dropped. A run that raises is logged and kept in :attr:`SyncScheduler.last_run`; the
worker goes on.

Example:
    >>> from aof_index.knowledge.scheduler import SyncScheduler
    >>> from aof_index.knowledge.sync import open_sync
    >>> scheduler = SyncScheduler(open_sync("knowledge-base.yaml"))  # doctest: +SKIP
    >>> scheduler.start()  # doctest: +SKIP
    >>> scheduler.request(["runbooks"], reason="docs changed")  # doctest: +SKIP
    >>> scheduler.wait_for_run(after=0, timeout=60).report.added  # doctest: +SKIP
    >>> scheduler.stop(timeout=30)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, Protocol

from aof_index.build.sources import select_sources
from aof_index.knowledge.runlock import SyncBusyError, run_lock
from aof_index.knowledge.sync import KnowledgeBaseSync, SyncMode, SyncReport
from aof_index.spec.types import CronSchedule

__all__ = [
    "DEFAULT_BUSY_RETRY",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_JITTER",
    "HISTORY",
    "Clock",
    "RunRecord",
    "ScheduleType",
    "SyncRequest",
    "SyncScheduler",
    "SystemClock",
]

logger = logging.getLogger(__name__)

ScheduleType = Literal["manual", "cron", "webhook", "continuous"]

DEFAULT_INTERVAL = 60.0
"""Seconds between the end of one continuous poll and the start of the next."""
DEFAULT_MAX_BACKOFF = 900.0
"""Longest wait between continuous polls after repeated failures (15 minutes)."""
DEFAULT_MAX_JITTER = 60.0
"""Upper bound of the default cron jitter; it is also at most 10% of the cron interval."""
HISTORY = 100
"""How many completed runs :attr:`SyncScheduler.history` keeps."""
DEFAULT_BUSY_RETRY = 15.0
"""Seconds before retrying a run deferred because another process holds the run lock."""

_MODE_RANK: dict[str, int] = {"incremental": 0, "differential": 1, "full": 2}


class Clock(Protocol):
    """Where the scheduler reads the time and waits: swap it to test without real minutes."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass (``None``: no limit); returns
        whether it was set."""
        ...


class SystemClock:
    """The real clock: :func:`time.time` and :meth:`threading.Event.wait`."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Wait on ``event`` for at most ``seconds``."""
        return event.wait(seconds)


@dataclass(frozen=True)
class SyncRequest:
    """A queued sync: which sources (``None``: all enabled ones), which mode, and why."""

    sources: frozenset[str] | None
    mode: SyncMode
    reasons: tuple[str, ...]

    def merge(self, other: SyncRequest) -> SyncRequest:
        """One request doing what both ask: the union of sources, the strongest mode."""
        sources = (
            None if self.sources is None or other.sources is None else self.sources | other.sources
        )
        mode = self.mode if _MODE_RANK[self.mode] >= _MODE_RANK[other.mode] else other.mode
        return SyncRequest(sources, mode, self.reasons + other.reasons)

    @property
    def reason(self) -> str:
        """The reasons, joined (``cron; webhook github 1b2c...``)."""
        return "; ".join(dict.fromkeys(self.reasons))


@dataclass(frozen=True)
class RunRecord:
    """One completed run of the scheduler."""

    number: int
    """1 for the first run, counting up (deferred attempts are not runs)."""
    reason: str
    """Why it ran (``startup``, ``cron``, ``poll``, a request's reason; joined when merged)."""
    mode: SyncMode
    sources: tuple[str, ...] | None
    """The sources asked for (``None``: all enabled ones)."""
    started: datetime
    finished: datetime
    report: SyncReport | None
    """The sync's report; ``None`` when it raised."""
    error: str | None
    """What the sync raised, if it did."""
    next_delay: float | None
    """continuous: seconds until the next poll, as this run left the backoff."""

    @property
    def ok(self) -> bool:
        """The sync completed and no source failed."""
        return self.error is None and self.report is not None and not self.report.failed


class SyncScheduler:
    """Runs one KnowledgeBase's syncs in a background thread, on its schedule and on request.

    Args:
        sync: the KnowledgeBase's sync.
        schedule: ``manual``, ``cron``, ``webhook`` or ``continuous`` (default:
            ``spec.indexing.schedule.type``, else ``manual``).
        cron: the cron expression (default: ``spec.indexing.schedule.cron``).
        on_startup: sync once when started (default: ``spec.sync.onStartup``, true).
        interval: continuous: seconds between polls.
        max_backoff: continuous: longest wait after repeated failures.
        jitter: cron: the most seconds added to each fire time (``None``:
            ``min(60, 10% of the cron interval)``; ``0``: none).
        busy_retry: seconds between attempts while another process holds the run lock.
        exclusive: a lock held during every run, to serialise the syncs of several
            KnowledgeBases that write to the same Memory in this process.
        clock: time source and waiting (default: the system clock).
        rng: random source of the jitter.
        timezone: the zone cron expressions are read in (default UTC).

    Raises:
        ValueError: ``schedule`` is ``cron`` with no cron expression, or a number is out
            of range (each message names the argument or field).
    """

    def __init__(
        self,
        sync: KnowledgeBaseSync,
        *,
        schedule: ScheduleType | None = None,
        cron: CronSchedule | str | None = None,
        on_startup: bool | None = None,
        interval: float = DEFAULT_INTERVAL,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        jitter: float | None = None,
        busy_retry: float = DEFAULT_BUSY_RETRY,
        exclusive: AbstractContextManager[Any] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        timezone: tzinfo = UTC,
    ) -> None:
        spec = sync.resource.spec
        configured = spec.indexing.schedule if spec.indexing is not None else None
        self.sync = sync
        self.name = sync.resource.metadata.name
        self.schedule: ScheduleType = schedule or (
            configured.type if configured is not None else "manual"
        )
        if cron is None and configured is not None:
            cron = configured.cron
        self.cron = CronSchedule(cron) if isinstance(cron, str) else cron
        if self.schedule == "cron" and self.cron is None:
            raise ValueError(
                f"KnowledgeBase {self.name}: spec.indexing.schedule.type is cron but "
                "spec.indexing.schedule.cron is missing; add one such as '0 */6 * * *'"
            )
        for arg, value in (("interval", interval), ("max_backoff", max_backoff)):
            if value <= 0:
                raise ValueError(f"{arg} must be > 0 seconds (got {value})")
        if jitter is not None and jitter < 0:
            raise ValueError(f"jitter must be >= 0 seconds (got {jitter})")
        if busy_retry < 0:
            raise ValueError(f"busy_retry must be >= 0 seconds (got {busy_retry})")
        policy = spec.sync
        self.on_startup = (
            on_startup
            if on_startup is not None
            else (policy.on_startup if policy is not None else True)
        )
        self.default_mode: SyncMode = policy.mode if policy is not None else "incremental"
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.jitter = jitter
        self.busy_retry = busy_retry
        self.timezone = timezone
        self._exclusive = exclusive
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._pending: SyncRequest | None = None
        self._retry_at: float | None = None
        self._next_fire: float | None = None
        self._last_jitter = 0.0
        self._next_poll: float | None = None
        self._delay = interval
        self._running = False
        self._runs = 0
        self._deferred = 0
        self._last: RunRecord | None = None
        self._history: deque[RunRecord] = deque(maxlen=HISTORY)

    # -- control ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (a sync at once if ``on_startup``), and log the schedule.

        Raises:
            RuntimeError: the scheduler was already started.
        """
        with self._cond:
            if self._thread is not None:
                raise RuntimeError(f"the scheduler of {self.name} was already started")
            self._stopping = False
            now = self._clock.now()
            if self.on_startup:
                self._enqueue(None, self.default_mode, "startup")
            if self.schedule == "cron":
                self._schedule_cron(now)
            elif self.schedule == "continuous" and not self.on_startup:
                self._next_poll = now + self.interval
            self._thread = threading.Thread(
                target=self._loop, name=f"aof-index-sync-{self.name}", daemon=True
            )
            self._thread.start()
        logger.info("%s", self.describe())

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the worker after the run in progress (never cut short mid-write).

        Queued requests that have not started are dropped (and logged). Returns whether the
        worker ended within ``timeout`` seconds (``None``: wait for it).
        """
        with self._cond:
            self._stopping = True
            if self._pending is not None:
                logger.info(
                    "%s: stopping; dropped queued sync (%s)", self.name, self._pending.reason
                )
                self._pending = None
            self._wake.set()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def request(
        self,
        sources: Sequence[str] | None = None,
        *,
        reason: str,
        mode: SyncMode | None = None,
    ) -> None:
        """Queue a sync of ``sources`` (``None``: all enabled sources).

        It starts at once when no run is in progress; otherwise it is merged with the other
        requests into one run after the current one.

        Args:
            sources: source names (``spec.sources[].name``).
            reason: why, for the logs and :attr:`RunRecord.reason`.
            mode: the sync mode (default: ``spec.sync.mode``).

        Raises:
            ManifestError: a name is not a source of this KnowledgeBase (it lists them).
            ValueError: ``mode`` is not one of full, incremental, differential.
        """
        if mode is not None and mode not in _MODE_RANK:
            raise ValueError(f"mode must be one of {', '.join(sorted(_MODE_RANK))} (got {mode!r})")
        if sources is not None:
            select_sources(self.sync.resource, names=list(sources))  # unknown name: raises
        with self._cond:
            self._enqueue(sources, mode or self.default_mode, reason)

    # -- state ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A run is in progress (including waiting for the run lock)."""
        return self._running

    @property
    def alive(self) -> bool:
        """The worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def runs(self) -> int:
        """Runs completed so far (successful or not)."""
        return self._runs

    @property
    def deferred(self) -> int:
        """Run attempts put off because another process held the run lock."""
        return self._deferred

    @property
    def pending(self) -> SyncRequest | None:
        """The queued request, if any."""
        return self._pending

    @property
    def last_run(self) -> RunRecord | None:
        """The last completed run."""
        return self._last

    @property
    def history(self) -> tuple[RunRecord, ...]:
        """The last completed runs (at most :data:`HISTORY`), oldest first."""
        with self._cond:
            return tuple(self._history)

    @property
    def last_report(self) -> SyncReport | None:
        """The report of the last completed run (``None`` before one, or if it raised)."""
        return self._last.report if self._last is not None else None

    @property
    def delay(self) -> float:
        """continuous: the current wait between polls (``interval``, or backed off)."""
        return self._delay

    @property
    def next_run(self) -> datetime | None:
        """When the next scheduled (cron or continuous) run is due, if any."""
        due = [t for t in (self._next_fire, self._next_poll) if t is not None]
        return datetime.fromtimestamp(min(due), self.timezone) if due else None

    def wait_for_run(self, after: int, timeout: float) -> RunRecord:
        """Wait until more than ``after`` runs have completed and return the latest one.

        Raises:
            TimeoutError: no such run within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._runs > after, timeout):
                raise TimeoutError(
                    f"{self.name}: no run completed after run {after} within {timeout}s "
                    f"(runs: {self._runs}, deferred: {self._deferred}, "
                    f"running: {self._running})"
                )
            assert self._last is not None
            return self._last

    def describe(self) -> str:
        """One line saying what is scheduled, for logs."""
        startup = ", sync on startup" if self.on_startup else ""
        if self.schedule == "cron" and self.cron is not None:
            if self._next_fire is None:
                return f"{self.name}: cron {self.cron.expression!r}{startup}"
            fire = datetime.fromtimestamp(self._next_fire, self.timezone)
            return (
                f"{self.name}: cron {self.cron.expression!r}, next run "
                f"{fire:%Y-%m-%d %H:%M:%S} {fire.tzname()} (jitter {self._last_jitter:.0f} s)"
                + startup
            )
        if self.schedule == "continuous":
            return (
                f"{self.name}: continuous, an incremental sync every {self.interval:g} s "
                f"(backing off up to {self.max_backoff:g} s after failures){startup}"
            )
        return f"{self.name}: {self.schedule} (syncs on request){startup}"

    # -- the worker -------------------------------------------------------------------
    def _enqueue(self, sources: Sequence[str] | None, mode: SyncMode, reason: str) -> None:
        """Queue (or merge) a request; the caller holds ``self._cond``."""
        new = SyncRequest(frozenset(sources) if sources is not None else None, mode, (reason,))
        self._pending = new if self._pending is None else self._pending.merge(new)
        self._wake.set()
        if self._running:
            logger.info(
                "%s: sync requested (%s); queued after the run in progress", self.name, reason
            )

    def _max_jitter(self, fire: datetime) -> float:
        if self.jitter is not None:
            return self.jitter
        assert self.cron is not None
        period = (self.cron.next_after(fire) - fire).total_seconds()
        return min(DEFAULT_MAX_JITTER, 0.1 * period)

    def _schedule_cron(self, now: float) -> None:
        """Set the next cron fire after ``now``, with jitter; the caller holds the lock."""
        assert self.cron is not None
        fire = self.cron.next_after(datetime.fromtimestamp(now, self.timezone))
        self._last_jitter = self._rng.uniform(0.0, self._max_jitter(fire))
        self._next_fire = fire.timestamp() + self._last_jitter

    def _poll_mode(self) -> SyncMode:
        return "incremental" if self.default_mode == "full" else self.default_mode

    def _loop(self) -> None:
        while True:
            request: SyncRequest | None = None
            wait: float | None = None
            with self._cond:
                if self._stopping:
                    return
                now = self._clock.now()
                if self._next_fire is not None and now >= self._next_fire:
                    self._enqueue(None, self.default_mode, "cron")
                    self._schedule_cron(now)
                    logger.info("%s", self.describe())
                if self._next_poll is not None and now >= self._next_poll:
                    self._enqueue(None, self._poll_mode(), "poll")
                    self._next_poll = None
                if self._pending is not None and (self._retry_at is None or now >= self._retry_at):
                    request, self._pending, self._retry_at = self._pending, None, None
                    self._running = True
                else:
                    due = [t for t in (self._next_fire, self._next_poll) if t is not None]
                    if self._pending is not None and self._retry_at is not None:
                        due.append(self._retry_at)
                    wait = max(min(due) - now, 0.0) if due else None
                    self._wake.clear()
            if request is not None:
                self._run(request)
            else:
                self._clock.wait(self._wake, wait)

    def _run(self, request: SyncRequest) -> None:
        number = self._runs + 1
        sources = tuple(sorted(request.sources)) if request.sources is not None else None
        started = datetime.now(UTC)
        report: SyncReport | None = None
        error: str | None = None
        logger.info(
            "%s: sync #%d (%s, %s, sources: %s)",
            self.name,
            number,
            request.reason,
            request.mode,
            ", ".join(sources) if sources is not None else "all",
        )
        exclusive = self._exclusive if self._exclusive is not None else nullcontext()
        try:
            with exclusive, run_lock(self.sync):
                report = self.sync.sync(mode=request.mode, sources=sources)
        except SyncBusyError as exc:
            with self._cond:
                self._deferred += 1
                merged = request if self._pending is None else request.merge(self._pending)
                self._pending = merged
                self._retry_at = self._clock.now() + self.busy_retry
                self._running = False
                self._cond.notify_all()
            logger.warning(
                "%s: sync deferred, retrying in %g s: %s", self.name, self.busy_retry, exc
            )
            return
        except Exception as exc:  # a run must never kill the worker
            error = f"{type(exc).__name__}: {exc}"
            logger.exception("%s: sync #%d raised", self.name, number)
        failed = error is not None or (report is not None and bool(report.failed))
        with self._cond:
            next_delay: float | None = None
            if self.schedule == "continuous":
                self._delay = min(self._delay * 2, self.max_backoff) if failed else self.interval
                self._next_poll = self._clock.now() + self._delay
                next_delay = self._delay
            self._runs = number
            self._last = RunRecord(
                number=number,
                reason=request.reason,
                mode=request.mode,
                sources=sources,
                started=started,
                finished=datetime.now(UTC),
                report=report,
                error=error,
                next_delay=next_delay,
            )
            self._history.append(self._last)
            self._running = False
            self._cond.notify_all()
        if report is not None:
            logger.info(
                "%s: sync #%d %s in %.1f s: %d new, %d changed, %d deleted, %d unchanged%s%s",
                self.name,
                number,
                "failed" if failed else "done",
                report.seconds,
                report.added,
                report.updated,
                report.deleted,
                report.unchanged,
                f"; failed sources: {', '.join(report.failed)}" if report.failed else "",
                f"; next poll in {next_delay:g} s" if next_delay is not None else "",
            )
