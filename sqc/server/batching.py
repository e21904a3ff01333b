"""Micro-batching: concurrent requests to one model gathered into one pipeline call.

Each model has one or more batcher threads (see `MicroBatcher`). A request hands its
(question, context) pairs to `submit` and waits on the returned future. A batcher thread takes
the first waiting request, then everything else already queued, up to `max_batch_size` pairs;
if more requests had arrived at the server for this model by then but were not queued yet
(they were still being read and parsed), it waits for that many more, at most `max_wait`
seconds. A lone client therefore never waits, and under load the queue fills while the engine
runs the previous batch, so batches grow with load.

All pairs of a batch go through `QuestionAnsweringPipeline.answer_pairs` in one call (one
engine call per bucket and chunk of `engine.max_batch_size` windows). If that call rejects the
batch as a whole (a ValueError or TypeError, such as a question over `max_question_length`),
each request is run alone so that only the faulty one fails.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

__all__ = ["MicroBatcher"]

log = logging.getLogger("sqc.server")

Pairs = Sequence[tuple[str, str]]
_STOP = object()


class MicroBatcher:
    """Gathers requests into batches for `run_batch(pairs, threads) -> answers`.

    `threads` is the engine threads the batcher may use in all. With `workers` > 1, that many
    batcher threads take batches from one queue: a batch gathered while nothing else waits runs
    with all `threads` (a lone client gets the whole machine); a batch gathered while more work
    waits runs with `threads // workers`, so that under load several smaller engine calls run
    side by side (each call's tokenizing and decoding overlaps another's engine time, and a
    single-threaded call has no barriers to wait at). Threads in use never exceed `threads`.

    `on_batch(questions, requests, seconds)` is called after every pipeline call (for metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[Pairs, int], list],
        *,
        max_batch_size: int,
        max_wait: float,
        threads: int = 1,
        workers: int = 1,
        name: str = "model",
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size}")
        if threads < 1 or workers < 1:
            raise ValueError(f"threads and workers must be positive, got {threads}, {workers}")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.threads = threads
        self.workers = workers
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._arriving = 0  # requests announced by `arriving()` and not yet submitted
        self._lock = threading.Lock()
        self._threads_free = threads
        self._threads_changed = threading.Condition(self._lock)
        self._closed = False
        self._workers = [
            threading.Thread(target=self._loop, name=f"sqc-batcher-{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    # -- request side ----------------------------------------------------------------------

    def arriving(self) -> _Arrival:
        """`with batcher.arriving(): ... submit(...)`: tells the batcher a request is on its way,
        so a batch being gathered waits for it (up to max_wait) instead of leaving without it."""
        return _Arrival(self)

    def submit(self, pairs: Pairs) -> Future:
        """A future of the answers to `pairs` (a list, in order), or of the pipeline's error."""
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("the model is shutting down"))
            return future
        self._queue.put((list(pairs), future))
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Answer what is queued, then stop the threads."""
        if not self._closed:
            self._closed = True
            for _ in self._workers:
                self._queue.put(_STOP)
            for worker in self._workers:
                worker.join(timeout)

    # -- batcher thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            size = len(first[0])
            stop = False
            # Wait only for the requests already being read when gathering began, not for
            # every later one: under steady load new requests never stop arriving, and the
            # engine must not idle waiting for them (they queue for the next batch instead).
            stragglers = self._arriving
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if stragglers <= 0 or remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                size += len(item[0])
                stragglers -= 1
            threads = self._take_threads()
            try:
                self._run(batch, threads)
            finally:
                self._give_back(threads)
            if stop:
                return

    def _take_threads(self) -> int:
        """All threads when no other work waits, else a worker's share; blocks until free."""
        alone = self._queue.empty()
        share = max(1, self.threads // self.workers)
        with self._threads_changed:
            while self._threads_free < (self.threads if alone else share):
                if alone and self._threads_free >= share:
                    break  # another worker is busy: take a share, not the whole machine
                self._threads_changed.wait()
            threads = self.threads if alone and self._threads_free == self.threads else share
            self._threads_free -= threads
            return threads

    def _give_back(self, threads: int) -> None:
        with self._threads_changed:
            self._threads_free += threads
            self._threads_changed.notify_all()

    def _run(self, batch: list[tuple[list, Future]], threads: int) -> None:
        pairs = [pair for request_pairs, _ in batch for pair in request_pairs]
        started = time.perf_counter()
        try:
            answers = self._run_batch(pairs, threads)
        except (ValueError, TypeError) as e:
            if len(batch) == 1:
                batch[0][1].set_exception(e)
            else:  # one bad request must not fail the others: run each alone
                for request_pairs, future in batch:
                    self._run([(request_pairs, future)], threads)
            return
        except Exception as e:  # noqa: BLE001 - every waiting request must be answered
            log.exception("pipeline call failed")
            for _, future in batch:
                future.set_exception(e)
            return
        if self._on_batch is not None:
            self._on_batch(len(pairs), len(batch), time.perf_counter() - started)
        first = 0
        for request_pairs, future in batch:
            future.set_result(answers[first : first + len(request_pairs)])
            first += len(request_pairs)


class _Arrival:
    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._done = False

    def __enter__(self) -> _Arrival:
        with self._batcher._lock:
            self._batcher._arriving += 1
        return self

    def submitted(self) -> None:
        """Called once the request is queued (or given up): it no longer counts as arriving."""
        if not self._done:
            self._done = True
            with self._batcher._lock:
                self._batcher._arriving -= 1

    def __exit__(self, *exc) -> None:
        self.submitted()
