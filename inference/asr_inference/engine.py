"""The dynamic batching engine shared by every request.

Shape follows Ray Serve's `_BatchQueue`: a queue plus a full-batch event; the batcher takes the first waiting
item, then keeps taking items until the batch is full (`max_batch_size` items or `max_batch_audio_s` padded audio
seconds) or the first item's deadline passes (`max_wait_ms`, a monotonic deadline that only shrinks). Items of
very different lengths (`max_length_ratio`) go to different batches: padding is paid by every item. Each batch
is sorted by length to limit padding and handed to ONE inference thread per device, so the accelerator sees one
batch at a time while decoding and feature work for the next batch go on in other threads. Results are checked
for count and delivered to each item's future (`if not fut.done()`: the request may have timed out or its client
gone, which also means the item is skipped if still queued). A batch whose forward raises is retried item by
item, so only the item that fails alone gets the error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from .backends import Backend, DecodeOptions, ItemResult, Prepared
from .device_faults import is_out_of_memory, release_cached_memory, sticky_device_error
from .errors import DeviceFailed, InferenceFailed, NotReady, QueueFull
from .metrics import Metrics

log = logging.getLogger("asr_inference.engine")
T = TypeVar("T")
# items shorter than this count as this long for max_length_ratio: padding a short clip to 2 s costs less than the
# fixed cost of a batch of its own
LENGTH_RATIO_FLOOR_S = 2.0


@dataclass
class WorkItem:
    prepared: Prepared
    options: DecodeOptions
    future: asyncio.Future[ItemResult]
    enqueued_at: float = field(default_factory=time.monotonic)
    batch_size: int = 0  # size of the batch it ran in (for the request log)
    queue_s: float = 0.0  # from queued until its batch was formed (for the Server-Timing header)
    batch_s: float = 0.0  # forward time of the batch it ran in
    batch_started: float = 0.0  # tells one request's items that shared a batch apart from ones that did not
    request: object | None = None  # the request it belongs to (its turn in the fair order); None: its own request
    turn: int = 0  # set by BatchQueue.put: the round in which it is served


class BatchQueue:
    """Waiting items + the batch-forming policy. Lives on the event loop; not thread-safe.

    Fair order: items are served in rounds, one item per request per round (start-time fair queuing with a unit
    cost per item). A long file's windows queue round after round, so a short clip that arrives behind them waits
    for at most one of them (and the batch running), not for all of them.
    """

    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        max_batch_audio_s: float,
        metrics: Metrics,
        pending: Callable[[], int] | None = None,
        max_length_ratio: float = 0.0,
    ):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_batch_audio_s = max_batch_audio_s
        self.max_length_ratio = max_length_ratio
        self._items: collections.deque[WorkItem] = collections.deque()
        self._nonempty = asyncio.Event()
        self.full_batch_event = asyncio.Event()
        self._forming = 0  # items already taken into the batch being formed
        self._round = 0  # the turn of the item served last: a request that arrives now starts in this round
        self._last_turn: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._metrics = metrics
        # requests that have arrived but not queued an item yet (the Engine's count); with none and an empty queue,
        # nothing can join the batch, so waiting would only add latency. Unknown (a bare queue): assume one.
        self.pending: Callable[[], int] = pending or (lambda: 1)
        # computed at every scrape from the deque itself: a value set on put/pop goes stale when waiters leave
        # (abandoned items are dropped without a set), and this is what KEDA/HPA scale on
        metrics.queue_depth.set_function(self.live_count)

    def __len__(self) -> int:
        return len(self._items)

    def live_count(self) -> int:
        """Queued items whose request still waits for them."""
        return sum(1 for it in self._items if not it.future.done())

    def ahead_of_a_new_request(self) -> int:
        """Queued items a request arriving now would wait behind: its first item is served in the current round,
        after the items of that round (later rounds, e.g. a long file's remaining windows, come after it)."""
        return sum(1 for it in self._items if it.turn <= self._round)

    def put(self, item: WorkItem) -> None:
        """Queue the item in its request's next round, after every item of that round or an earlier one."""
        turn = self._round
        if item.request is not None:
            turn = max(self._last_turn.get(item.request, turn - 1) + 1, self._round)
            self._last_turn[item.request] = turn
        item.turn = turn
        position = len(self._items)
        while position > 0 and self._items[position - 1].turn > turn:
            position -= 1
        self._items.insert(position, item)
        self._nonempty.set()
        self.full_batch_event.set()  # the forming batch re-checks: full, over budget, or nothing more on its way

    def _pop_live(self) -> WorkItem | None:
        """Next item whose request still waits for it; abandoned ones (timed out, disconnected) are dropped."""
        while self._items:
            item = self._take()
            if not item.future.done():
                return item
        return None

    def _take(self) -> WorkItem:
        item = self._items.popleft()
        self._round = max(self._round, item.turn)
        return item

    def drop_abandoned(self) -> None:
        if any(it.future.done() for it in self._items):
            self._items = collections.deque(it for it in self._items if not it.future.done())

    def _within_budget(self, batch: list[WorkItem], item: WorkItem) -> bool:
        longest = max([it.prepared.duration_s for it in batch] + [item.prepared.duration_s])
        return len(batch) < self.max_batch_size and (len(batch) + 1) * longest <= self.max_batch_audio_s

    def _similar(self, batch: list[WorkItem], item: WorkItem) -> bool:
        """Lengths within `max_length_ratio` of each other (below `LENGTH_RATIO_FLOOR_S` they count as that)."""
        if not self.max_length_ratio:
            return True
        lengths = [max(it.prepared.duration_s, LENGTH_RATIO_FLOOR_S) for it in (*batch, item)]
        return max(lengths) <= self.max_length_ratio * min(lengths)

    def _take_joinable(self, batch: list[WorkItem]) -> bool:
        """Move the queued items that may join `batch` into it, in the fair order; True if it is now closed (full,
        or the next item's padding would pass the audio budget). An item of a very different length is passed
        over, not taken: it stays first in the queue and leads the next batch. Past it, only items of its round
        or an earlier one may join, so passing over never lets a later round (a long file's next window) ahead of
        a request's turn."""
        index, last_turn = 0, None
        while index < len(self._items) and len(batch) < self.max_batch_size:
            item = self._items[index]
            if item.future.done():
                del self._items[index]
                continue
            if last_turn is not None and item.turn > last_turn:
                return False
            if not self._similar(batch, item):
                last_turn = item.turn if last_turn is None else last_turn
                index += 1
                continue
            if not self._within_budget(batch, item):
                return True
            del self._items[index]
            self._round = max(self._round, item.turn)
            batch.append(item)
        return len(batch) >= self.max_batch_size

    async def wait_for_batch(self) -> list[WorkItem]:
        first = None
        while first is None:
            await self._nonempty.wait()
            first = self._pop_live()
            if first is None:
                self._nonempty.clear()
        batch = [first]
        deadline = first.enqueued_at + self.max_wait_s
        while True:
            closed = self._take_joinable(batch)
            remaining = deadline - time.monotonic()
            # not closed: nothing queued can join; only a request still on its way could
            if closed or remaining <= 0 or self.pending() == 0:
                break
            self.full_batch_event.clear()
            self._forming = len(batch)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.full_batch_event.wait(), remaining)
            finally:
                self._forming = 0
        if not self._items:
            self._nonempty.clear()
        if len(self._items) < self.max_batch_size:
            self.full_batch_event.clear()
        return batch


class Ticket:
    """One request's claims on the engine until its first item is queued or it ends: a reserved queue slot once
    admitted (`admit()`, from the headers: QueueFull when there is no room), and an arrival once its body is
    complete (`arrive()`: a forming batch waits for it, up to max_wait_ms). `release()` returns whatever is still
    held; after it the ticket holds nothing for good. Every method is idempotent."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._admitted = self._arrived = self._released = False

    def admit(self) -> Ticket:
        if not (self._admitted or self._released):
            self._engine._reserve()
            self._admitted = True
        return self

    def arrive(self) -> Ticket:
        if not (self._arrived or self._released):
            self._engine._arriving += 1
            self._arrived = True
        return self

    def release(self) -> None:
        if self._admitted:
            self._engine._reserved -= 1
        if self._arrived:
            self._engine._arriving -= 1
        self._admitted = self._arrived = False
        self._released = True


class Engine:
    """Owns the queue, the inference thread and the batcher task."""

    def __init__(
        self,
        backend: Backend,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_batch_audio_s: float,
        max_queue_size: int,
        max_queue_wait_s: float = 0.0,
        max_length_ratio: float = 0.0,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.max_queue_size = max_queue_size
        self.max_queue_wait_s = max_queue_wait_s
        self.queue = BatchQueue(
            max_batch_size,
            max_wait_ms / 1000,
            max_batch_audio_s,
            metrics,
            pending=lambda: self._arriving,
            max_length_ratio=max_length_ratio,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-inference")
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._ewma_batch_s = 0.05  # for Retry-After
        self.device_failure: str | None = None  # a sticky device error: no more work, /healthz fails
        self._reserved = 0  # admitted requests that have not queued an item yet
        self._arriving = 0  # requests whose body is complete (parsing, decoding) that have not queued an item yet

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asr-batcher")

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or running (SIGTERM path). True if drained in time."""
        deadline = time.monotonic() + timeout_s
        while (self.queue or self._busy) and time.monotonic() < deadline:
            self.queue.drop_abandoned()
            await asyncio.sleep(0.02)
        return not self.queue and not self._busy

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in list(self.queue._items):
            if not item.future.done():
                item.future.set_exception(NotReady("server is shutting down"))
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ admission
    def ticket(self) -> Ticket:
        """A request's ticket: `admit()` it from the headers, `arrive()` it once its body is complete, `release()`
        it when its first item is queued or it ends."""
        return Ticket(self)

    def _reserve(self) -> None:
        """Backpressure at request admission: refuse new work while queued items plus requests admitted but not
        yet queued (still uploading, decoding) reach max_queue_size, or would keep it waiting past
        max_queue_wait_s."""
        if self.device_failure is not None:
            raise DeviceFailed(self._device_failed_message())
        self.queue.drop_abandoned()
        load = len(self.queue) + self._reserved
        if load >= self.max_queue_size:
            wait_s = self._wait_of_a_new_request()
            reason = f"{len(self.queue)} items queued, {self._reserved} requests being prepared"
        elif self.max_queue_wait_s and (wait_s := self._wait_of_a_new_request()) > self.max_queue_wait_s:
            reason = f"an expected wait of {wait_s:.1f} s, over its {self.max_queue_wait_s:g} s budget"
        else:
            self._reserved += 1
            return
        raise QueueFull(f"server is at capacity ({reason}); retry later", retry_after_s=int(wait_s + 1))

    def _wait_of_a_new_request(self) -> float:
        # what would be served before it: the items ahead of it in the fair order and complete bodies being
        # prepared; not uploads still in progress (a stalled upload holds a slot in max_queue_size, but no time on
        # the device), nor a long file's windows of later rounds. Counted only when needed (a scan of the queue).
        return self.expected_wait_s(self.queue.ahead_of_a_new_request() + self._arriving)

    def expected_wait_s(self, ahead: int) -> float:
        """How long a request would wait for its batch to start behind `ahead` items: the batches they fill, plus
        the one running, each taking the measured batch time (moving average)."""
        batches_ahead = -(-ahead // self.queue.max_batch_size) + (1 if self._busy else 0)
        return batches_ahead * self._ewma_batch_s

    async def run_on_device(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` on the inference thread (warm-up, precision checks): never beside a batch."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def submit(self, prepared: Prepared, options: DecodeOptions, request: object | None = None) -> WorkItem:
        """Queue one item; `request` (any object that lives as long as the request) gives its turn in the fair
        order: items of one request are served one per round."""
        if self._task is None or self._task.done():
            raise NotReady("inference engine is not running")
        item = WorkItem(prepared, options, asyncio.get_running_loop().create_future(), request=request)
        self.queue.put(item)
        return item

    # ------------------------------------------------------------------ batcher
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.queue.wait_for_batch()
            batch.sort(key=lambda it: it.prepared.length)  # similar lengths together: less padding
            self._busy = True
            formed = time.monotonic()
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._forward_isolating, batch)
            except Exception as exc:  # the batcher must survive anything; every waiter hears about it
                log.exception("batch of %d failed", len(batch))
                results = [exc] * len(batch)
            finally:
                self._busy = False
            elapsed = time.perf_counter() - started
            self._ewma_batch_s = 0.8 * self._ewma_batch_s + 0.2 * elapsed
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_audio_seconds.observe(sum(it.prepared.duration_s for it in batch))
            for item, result in zip(batch, results, strict=True):
                item.batch_size = len(batch)
                item.queue_s, item.batch_s, item.batch_started = formed - item.enqueued_at, elapsed, started
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _forward(self, batch: Sequence[WorkItem]) -> list[ItemResult]:
        t0 = time.perf_counter()
        results = self.backend.transcribe_batch([it.prepared for it in batch], [it.options for it in batch])
        self.metrics.stage_duration_seconds.labels(stage="inference").observe(time.perf_counter() - t0)
        if len(results) != len(batch):
            raise InferenceFailed(f"model returned {len(results)} results for a batch of {len(batch)}")
        return results

    def _forward_isolating(self, batch: Sequence[WorkItem]) -> list[ItemResult | BaseException]:
        """Run the batch; if it raises, run each item alone so only the culprit fails (inference thread). An
        out-of-memory batch runs as two halves instead; after a sticky device error nothing runs any more."""
        if self.device_failure is not None:
            return [DeviceFailed(self._device_failed_message())] * len(batch)
        try:
            return list(self._forward(batch))
        except Exception as exc:
            if (reason := sticky_device_error(exc)) is not None:
                self.device_failure = reason
                self.metrics.device_errors_total.labels(kind="sticky").inc()
                log.error("device unusable after %s: taking no more work; /healthz fails so the pod restarts", exc)
                return [DeviceFailed(self._device_failed_message())] * len(batch)
            if is_out_of_memory(exc):
                return self._split_after_out_of_memory(batch, exc)
            if len(batch) == 1:
                log.warning("item failed in the forward pass: %s", exc)
                return [InferenceFailed(f"the model failed on this audio: {type(exc).__name__}: {exc}")]
            log.warning("batch of %d raised %s; retrying items one by one", len(batch), exc)
            self.metrics.batch_retries_total.inc()
        out: list[ItemResult | BaseException] = []
        for item in batch:
            if item.future.done():
                out.append(InferenceFailed("abandoned"))
                continue
            try:
                out.extend(self._forward([item]))
            except Exception as exc:
                out.append(InferenceFailed(f"the model failed on this audio: {type(exc).__name__}: {exc}"))
        return out

    def _split_after_out_of_memory(self, batch: Sequence[WorkItem], exc: Exception) -> list[ItemResult | BaseException]:
        self.metrics.device_errors_total.labels(kind="out_of_memory").inc()
        release_cached_memory(getattr(self.backend, "device", None))
        if len(batch) == 1:
            log.warning("out of device memory on one item alone: %s", exc)
            seconds = batch[0].prepared.duration_s
            return [InferenceFailed(f"out of device memory for this audio alone ({seconds:.1f} s)")]
        half = len(batch) // 2
        log.warning("out of device memory on a batch of %d: running it as two halves", len(batch))
        return self._forward_isolating(batch[:half]) + self._forward_isolating(batch[half:])

    def _device_failed_message(self) -> str:
        return f"the inference device is unusable ({self.device_failure}); this server restarts, retry elsewhere"
