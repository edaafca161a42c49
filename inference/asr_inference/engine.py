"""The dynamic batching engine shared by every request.

Shape follows Ray Serve's `_BatchQueue`: a queue plus a full-batch event; the batcher takes the first waiting
item, then keeps taking items until the batch is full (`max_batch_size` items or `max_batch_audio_s` padded audio
seconds) or the first item's deadline passes (`max_wait_ms`, a monotonic deadline that only shrinks). Items of
very different lengths (`max_length_ratio`) go to different batches: padding is paid by every item. Each batch
is sorted by length to limit padding and handed to ONE inference thread per device, so the accelerator sees one
batch at a time while decoding and feature work for the next batch go on in other threads. With several workers
(one per GPU of the pod, each with its own copy of the model), a batch is formed whenever a worker is idle and
goes to the idle worker that has been busy least so far; results do not depend on the worker. Results are checked
for count and delivered to each item's future (`if not fut.done()`: the request may have timed out or its client
gone, which also means the item is skipped if still queued). A batch whose forward raises is retried item by
item, so only the item that fails alone gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .backends import Backend, DecodeOptions, ItemResult, Prepared
from .batch_cost import BatchCost, padded_audio_s
from .batch_queue import BatchQueue, WorkItem
from .device_faults import is_out_of_memory, release_cached_memory, sticky_device_error
from .errors import DeviceFailed, InferenceFailed, NotReady, QueueFull
from .metrics import Metrics

log = logging.getLogger("asr_inference.engine")
T = TypeVar("T")


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


@dataclass(eq=False)
class Worker:
    """One device: its backend (own copy of the model) and its own inference thread."""

    backend: Backend
    label: str  # the device as metrics name it ("cuda:1"; "cpu/0" when several workers share a device)
    thread_name: str = "asr-inference"
    executor: ThreadPoolExecutor = field(init=False)
    busy: bool = False
    running_until: float = 0.0  # when its running batch is expected to end (monotonic), while busy
    busy_s: float = 0.0  # forward seconds so far: the least-loaded idle worker takes the next batch

    def __post_init__(self) -> None:
        device = getattr(self.backend, "device", None)
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=self.thread_name, initializer=_make_current, initargs=(device,)
        )


def _make_current(device: Any) -> None:
    """A CUDA device is current per thread: each inference thread makes its own worker's device current."""
    from .backends.cuda_setup import select_device

    select_device(device)


def worker_labels(devices: Sequence[str]) -> list[str]:
    """Metric labels for workers' devices: the device itself, numbered where several workers share one."""
    return [d if devices.count(d) == 1 else f"{d}/{i}" for i, d in enumerate(devices)]


class Engine:
    """Owns the queue, the inference workers (one thread per device) and the batcher task."""

    def __init__(
        self,
        backend: Backend | Sequence[Backend],
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_batch_audio_s: float,
        max_queue_size: int,
        max_queue_wait_s: float = 0.0,
        max_length_ratio: float = 0.0,
    ) -> None:
        backends = list(backend) if isinstance(backend, Sequence) else [backend]
        devices = [str(getattr(b, "device", "cpu")) for b in backends]
        labels = worker_labels(devices)
        self.workers = [
            Worker(b, label, "asr-inference" if len(backends) == 1 else f"asr-inference-{i}")
            for i, (b, label) in enumerate(zip(backends, labels, strict=True))
        ]
        self.backend = backends[0]  # per-item work (prepare, detokenize) is the same on every worker's copy
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
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # batches in flight, one per busy worker
        self._worker_idle = asyncio.Event()
        self.batch_cost = BatchCost()  # batch seconds from padded audio seconds: the wait budget and Retry-After
        for worker in self.workers:  # every device's series exists from the first scrape
            metrics.device_batches_total.labels(device=worker.label)
            metrics.device_busy_seconds_total.labels(device=worker.label)
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

    @property
    def _busy(self) -> bool:
        return any(w.busy for w in self.workers)

    async def stop(self) -> None:
        for task in [*([self._task] if self._task is not None else []), *self._running]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self.queue.abandon_all(NotReady("server is shutting down"))
        for worker in self.workers:
            worker.executor.shutdown(wait=True)

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
        # the device), nor a long file's windows that start later. Counted only when needed (a scan of the queue).
        return self.expected_wait_s(self.queue.durations_ahead_of_a_new_request(), self._arriving)

    def expected_wait_s(self, ahead: Sequence[float], arriving: int = 0) -> float:
        """How long a request would wait for its batch to start: until a worker is free (the soonest running batch
        to end, when every worker is busy), then the batches that the items `ahead` (their audio seconds, in the
        order served) and `arriving` bodies (counted at the mean length of those ahead, or of a second) fill, each
        as long as the learned cost of its padded audio, shared among the workers."""
        now = time.monotonic()
        wait = 0.0
        if all(w.busy for w in self.workers):
            wait = min(max(w.running_until - now, 0.0) for w in self.workers)
        typical = sum(ahead) / len(ahead) if ahead else 1.0
        lengths = [*ahead, *([typical] * arriving)]
        size, queued = self.queue.max_batch_size, 0.0
        for first in range(0, len(lengths), size):
            queued += self.batch_cost.estimate(padded_audio_s(lengths[first : first + size]))
        return wait + queued / len(self.workers)

    async def run_on_device(self, fn: Callable[..., T], *args: object, worker: int = 0) -> T:
        """Run `fn` on a worker's inference thread (warm-up, precision checks): never beside its batch."""
        return await asyncio.get_running_loop().run_in_executor(self.workers[worker].executor, fn, *args)

    def submit(
        self, prepared: Prepared, options: DecodeOptions, request: object | None = None, *, background: bool = False
    ) -> WorkItem:
        """Queue one item; `request` (any object that lives as long as the request) gives its place in the fair
        order: each item of a request starts where the request's previous one finished. `background`: optional
        work, run only in room no other item needs; QueueFull at once while a batch of other work waits."""
        if self._task is None or self._task.done():
            raise NotReady("inference engine is not running")
        if background and not self.queue.has_room_for_background():
            raise QueueFull("busy: background work is shed", retry_after_s=1)
        item = WorkItem(
            prepared, options, asyncio.get_running_loop().create_future(), request=request, background=background
        )
        self.queue.put(item)
        return item

    # ------------------------------------------------------------------ batcher
    async def _run(self) -> None:
        while True:
            worker = await self._idle_worker()
            batch = await self.queue.wait_for_batch()
            worker.busy = True  # claimed now: the next batch goes to another worker or waits for one
            task = asyncio.create_task(self._run_batch(worker, batch), name=f"asr-batch-{worker.label}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _idle_worker(self) -> Worker:
        """The idle worker that has been busy least so far; waits for one when all are busy."""
        while True:
            idle = [w for w in self.workers if not w.busy]
            if idle:
                return min(idle, key=lambda w: w.busy_s)
            self._worker_idle.clear()
            await self._worker_idle.wait()

    async def _run_batch(self, worker: Worker, batch: list[WorkItem]) -> None:
        batch.sort(key=lambda it: it.prepared.length)  # similar lengths together: less padding
        padded_s = padded_audio_s([it.prepared.duration_s for it in batch])
        formed = time.monotonic()
        worker.running_until = formed + self.batch_cost.estimate(padded_s)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(worker.executor, self._forward_isolating, worker, batch)
        except Exception as exc:  # the batcher must survive anything; every waiter hears about it
            log.exception("batch of %d failed", len(batch))
            results = [exc] * len(batch)
        finally:
            worker.busy = False
            self._worker_idle.set()
        elapsed = time.perf_counter() - started
        worker.busy_s += elapsed
        self.batch_cost.observe(padded_s, elapsed)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_audio_seconds.observe(sum(it.prepared.duration_s for it in batch))
        self.metrics.device_batches_total.labels(device=worker.label).inc()
        self.metrics.device_busy_seconds_total.labels(device=worker.label).inc(elapsed)
        for item, result in zip(batch, results, strict=True):
            item.batch_size = len(batch)
            item.queue_s, item.batch_s, item.batch_started = formed - item.enqueued_at, elapsed, started
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _forward(self, worker: Worker, batch: Sequence[WorkItem]) -> list[ItemResult]:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        results = worker.backend.transcribe_batch([it.prepared for it in batch], [it.options for it in batch])
        self.metrics.stage_cpu_seconds_total.labels(stage="inference").inc(time.thread_time() - cpu0)
        self.metrics.stage_duration_seconds.labels(stage="inference").observe(time.perf_counter() - t0)
        if len(results) != len(batch):
            raise InferenceFailed(f"model returned {len(results)} results for a batch of {len(batch)}")
        return results

    def _forward_isolating(self, worker: Worker, batch: Sequence[WorkItem]) -> list[ItemResult | BaseException]:
        """Run the batch; if it raises, run each item alone so only the culprit fails (inference thread). An
        out-of-memory batch runs as two halves instead; after a sticky device error nothing runs any more."""
        if self.device_failure is not None:
            return [DeviceFailed(self._device_failed_message())] * len(batch)
        try:
            return list(self._forward(worker, batch))
        except Exception as exc:
            if (reason := sticky_device_error(exc)) is not None:
                self.device_failure = reason
                self.metrics.device_errors_total.labels(kind="sticky").inc()
                log.error("device unusable after %s: taking no more work; /healthz fails so the pod restarts", exc)
                return [DeviceFailed(self._device_failed_message())] * len(batch)
            if is_out_of_memory(exc):
                return self._split_after_out_of_memory(worker, batch, exc)
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
                out.extend(self._forward(worker, [item]))
            except Exception as exc:
                out.append(InferenceFailed(f"the model failed on this audio: {type(exc).__name__}: {exc}"))
        return out

    def _split_after_out_of_memory(
        self, worker: Worker, batch: Sequence[WorkItem], exc: Exception
    ) -> list[ItemResult | BaseException]:
        self.metrics.device_errors_total.labels(kind="out_of_memory").inc()
        release_cached_memory(getattr(worker.backend, "device", None))
        if len(batch) == 1:
            log.warning("out of device memory on one item alone: %s", exc)
            seconds = batch[0].prepared.duration_s
            return [InferenceFailed(f"out of device memory for this audio alone ({seconds:.1f} s)")]
        half = len(batch) // 2
        log.warning("out of device memory on a batch of %d: running it as two halves", len(batch))
        return self._forward_isolating(worker, batch[:half]) + self._forward_isolating(worker, batch[half:])

    def _device_failed_message(self) -> str:
        return f"the inference device is unusable ({self.device_failure}); this server restarts, retry elsewhere"
