"""Bounded, cancellable background work for the server: worker threads, a small queue, a timeout, a model cache."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import nn

from srkit.descriptor import ModelDescriptor, describe

T = TypeVar("T")

# A model by the name a client asked for (the server binds the device).
ModelLoader = Callable[[str], nn.Module | ModelDescriptor]


class Busy(Exception):
    """Every worker is busy and the queue is full; the request should be retried later."""

    def __init__(self, *, running: int, waiting: int, retry_after_s: int) -> None:
        super().__init__(running, waiting, retry_after_s)
        self.running = running
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class JobTimeout(Exception):
    """A job did not finish within its time limit; it has been told to stop at its next checkpoint."""


class Cancelled(Exception):
    """Raised inside a job, at a checkpoint, once its request gave up on it (timeout, disconnect, shutdown)."""


class Abandoned(Exception):
    """The client went away before its job finished; the job has been told to stop at its next checkpoint."""


@dataclass(frozen=True)
class Timed(Generic[T]):
    """A job's result and where its time went: waiting for a worker, then running."""

    value: T
    wait_s: float
    run_s: float


class JobRunner:
    """Runs jobs on at most `max_jobs` threads with at most `max_queue` more waiting; refuses the rest (Busy).

    Worker threads cannot be killed, so a job that times out (or whose client disconnects) keeps its slot until
    it reaches its next checkpoint (`cancel.is_set()`, e.g. after each batch of tiles) and stops: the limits
    count real work.
    """

    def __init__(self, *, max_jobs: int, max_queue: int) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_jobs = max_jobs
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting; changed by the event loop (admit) and by worker threads (done)
        self._running = 0
        self._cancels: set[threading.Event] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._last_run_s = 1.0
        self.abandoned = 0  # requests whose client left before their job ended (changed on the event loop only)

    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs right now."""
        with self._lock:
            return self._running, self._admitted - self._running

    def retry_after_s(self) -> int:
        """A hint for Retry-After: how long the last job took, in whole seconds (at least 1)."""
        return max(1, math.ceil(self._last_run_s))

    async def run(
        self,
        work: Callable[[threading.Event], T],
        *,
        timeout_s: float,
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> Timed[T]:
        """Run work(cancel) on a worker thread; raise Busy when full and JobTimeout after timeout_s (wait + run).

        gone: returns an awaitable that completes once the client has left (disconnected); if it completes
        before the job does, the job is told to stop and Abandoned is raised, so an abandoned request gives
        its slot back at the job's next checkpoint instead of after the whole upscale.
        """
        cancel = threading.Event()
        with self._lock:
            if self._admitted >= self.max_jobs + self.max_queue:
                raise Busy(
                    running=self._running,
                    waiting=self._admitted - self._running,
                    retry_after_s=self.retry_after_s(),
                )
            self._admitted += 1
            self._cancels.add(cancel)
            if self._executor is None:
                # max_workers = max_jobs: the executor's own queue holds the (at most max_queue) waiting jobs.
                self._executor = ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="srkit-serve")
            executor = self._executor
        submitted = time.perf_counter()
        started: list[float] = []

        def job() -> T:
            if cancel.is_set():
                raise Cancelled()  # given up on while it waited: do not start
            with self._lock:
                self._running += 1
            started.append(time.perf_counter())
            try:
                return work(cancel)
            finally:
                with self._lock:
                    self._running -= 1
                    self._last_run_s = time.perf_counter() - started[0]

        def release(_future: Future[T]) -> None:
            # Runs when the job ends (or is cancelled before it started): only then is its slot free again.
            with self._lock:
                self._admitted -= 1
                self._cancels.discard(cancel)

        try:
            future = executor.submit(job)
        except RuntimeError:
            # The executor was shut down (server stopping) between admission and here: give the slot back.
            with self._lock:
                self._admitted -= 1
                self._cancels.discard(cancel)
            raise
        future.add_done_callback(release)
        result = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(gone()) if gone is not None else None

        def give_up() -> None:
            cancel.set()
            # Cancelling the asyncio wrapper cancels `future` too if it has not started yet (it never runs).
            result.cancel()

        try:
            waiting: set[asyncio.Future[Any]] = {result} if watcher is None else {result, watcher}
            done, _pending = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            give_up()  # the request's task was cancelled (server shutdown): stop the work too
            raise
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        if result not in done:
            give_up()
            if watcher is not None and watcher in done:
                watcher.result()  # an error while watching the connection is raised as is
                self.abandoned += 1
                raise Abandoned()
            raise JobTimeout()
        value = result.result()
        done_at = time.perf_counter()
        start = started[0] if started else submitted
        return Timed(value, wait_s=start - submitted, run_s=done_at - start)

    def close(self) -> None:
        """Tell every job to stop at its next checkpoint and drop the ones still waiting."""
        with self._lock:
            for cancel in self._cancels:
                cancel.set()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class ModelCache:
    """Models loaded on first use, once, and kept; safe to use from several worker threads."""

    def __init__(self, loader: ModelLoader) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._models: dict[str, ModelDescriptor] = {}

    def get(self, name: str) -> ModelDescriptor:
        """The model called `name`, loading (and describing) it on first use."""
        with self._lock:
            # One lock for all loads: loading is rare, and two threads must not load the same weights twice.
            if name not in self._models:
                self._models[name] = describe(self._loader(name))
            return self._models[name]
