"""The batch-forming policy: which waiting items run together, and in what order (see `BatchQueue`).

Lives on the event loop, not thread-safe; `engine.Engine` owns one and hands its batches to the inference thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from .backends import DecodeOptions, ItemResult, Prepared
from .batch_cost import padded_audio_s
from .metrics import Metrics

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
    start: float = 0.0  # set by BatchQueue.put: its virtual start time in the fair order (audio seconds)
    background: bool = False  # optional work (a realtime partial): served only where no other item waits


class BatchQueue:
    """Waiting items + the batch-forming policy. Lives on the event loop; not thread-safe.

    Fair order: start-time fair queuing, the cost of an item being its audio seconds. Each request's items start
    where its previous one finished (virtual time); a new request starts at the current virtual time, which moves
    on by the audio each batch served divided among the requests waiting (as if every waiting request were served
    at once, in equal shares). A long file's 30-s windows therefore come one per 30 s of audio served to each
    other request: a short clip arriving behind them waits for at most one (and the batch running), and a stream
    of short requests, each a new request, still lets the file move on at its share. Within a batch, while other
    requests wait, a request holds at most its share of the slots (`max_batch_size` / requests waiting), so a long
    file's segments do not fill every free slot and slow the batch its neighbours wait for.
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
        self._background: collections.deque[WorkItem] = collections.deque()  # FIFO, after every item in _items
        self._nonempty = asyncio.Event()
        self.full_batch_event = asyncio.Event()
        self._forming = 0  # items already taken into the batch being formed
        self._vtime = 0.0  # virtual time: where a request that arrives now starts
        self._finish: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()  # where its next starts
        self._metrics = metrics
        # requests that have arrived but not queued an item yet (the Engine's count); with none and an empty queue,
        # nothing can join the batch, so waiting would only add latency. Unknown (a bare queue): assume one.
        self.pending: Callable[[], int] = pending or (lambda: 1)
        # computed at every scrape from the deque itself: a value set on put/pop goes stale when waiters leave
        # (abandoned items are dropped without a set), and this is what KEDA/HPA scale on
        metrics.queue_depth.set_function(self.live_count)

    def __len__(self) -> int:
        return len(self._items) + len(self._background)

    def live_count(self) -> int:
        """Queued items whose request still waits for them (background work is optional: not counted)."""
        return sum(1 for it in self._items if not it.future.done())

    def has_room_for_background(self) -> bool:
        """Background work is queued only while less than a batch of other work waits: under load it is shed."""
        return len(self._items) < self.max_batch_size

    def durations_ahead_of_a_new_request(self) -> list[float]:
        """Audio seconds of the queued items a request arriving now would wait behind, in the order served: those
        starting at the current virtual time or before (later ones, e.g. a long file's remaining windows, come
        after it)."""
        return [it.prepared.duration_s for it in self._items if it.start <= self._vtime]

    def put(self, item: WorkItem) -> None:
        """Queue the item at its virtual start (where its request's previous item finished, or now), after every
        item starting there or before. Background items queue after all of those, in arrival order."""
        self._nonempty.set()
        self.full_batch_event.set()  # the forming batch re-checks: full, over budget, or nothing more on its way
        if item.background:
            item.start = self._vtime
            self._background.append(item)
            return
        start = self._vtime
        if item.request is not None:
            start = max(self._finish.get(item.request, start), start)
            self._finish[item.request] = start + item.prepared.duration_s
        item.start = start
        position = len(self._items)
        while position > 0 and self._items[position - 1].start > start:
            position -= 1
        self._items.insert(position, item)

    def _pop_live(self) -> WorkItem | None:
        """Next item whose request still waits for it; abandoned ones (timed out, disconnected) are dropped."""
        while self._items:
            item = self._take()
            if not item.future.done():
                return item
        while self._background:
            item = self._background.popleft()
            if not item.future.done():
                return item
        return None

    def _take(self) -> WorkItem:
        item = self._items.popleft()
        self._vtime = max(self._vtime, item.start)
        return item

    def _advance(self, batch: list[WorkItem]) -> None:
        """Virtual time moves on by the batch's audio shared among the requests waiting (the batch's included)."""
        waiting = {_owner(it) for it in (*batch, *self._items)}
        self._vtime += sum(it.prepared.duration_s for it in batch) / len(waiting)

    def drop_abandoned(self) -> None:
        if any(it.future.done() for it in self._items):
            self._items = collections.deque(it for it in self._items if not it.future.done())
        if any(it.future.done() for it in self._background):
            self._background = collections.deque(it for it in self._background if not it.future.done())

    def abandon_all(self, error: BaseException) -> None:
        for item in (*self._items, *self._background):
            if not item.future.done():
                item.future.set_exception(error)

    def _within_budget(self, batch: list[WorkItem], item: WorkItem) -> bool:
        padded_s = padded_audio_s([it.prepared.duration_s for it in (*batch, item)])
        return len(batch) < self.max_batch_size and padded_s <= self.max_batch_audio_s

    def _similar(self, batch: list[WorkItem], item: WorkItem) -> bool:
        """Lengths within `max_length_ratio` of each other (below `LENGTH_RATIO_FLOOR_S` they count as that)."""
        if not self.max_length_ratio:
            return True
        lengths = [max(it.prepared.duration_s, LENGTH_RATIO_FLOOR_S) for it in (*batch, item)]
        return max(lengths) <= self.max_length_ratio * min(lengths)

    def _take_joinable(self, batch: list[WorkItem]) -> bool:
        """Move the queued items that may join `batch` into it, in the fair order; True if it is now closed (full,
        or the next item's padding would pass the audio budget). An item of a very different length is passed
        over, not taken: it stays first in the queue and leads the next batch. Past it, only items starting no
        later may join, so passing over never lets a later item (a long file's next window) ahead of its turn."""
        if self._join_fair_order(batch):
            return True
        for item in list(self._background):  # room left: optional work joins, in arrival order
            if len(batch) >= self.max_batch_size or not self._within_budget(batch, item):
                break
            if not item.future.done() and self._similar(batch, item):
                self._background.remove(item)
                batch.append(item)
        return len(batch) >= self.max_batch_size

    def _join_fair_order(self, batch: list[WorkItem]) -> bool:
        # a request's share of the batch while others wait: a long file's items fill only the slots nobody else
        # needs, so the batch (whose time grows with its audio where the device is busy, e.g. a CPU) stays short
        waiting = [_owner(it) for it in (*batch, *self._items) if not it.future.done()]
        share = -(-self.max_batch_size // max(1, len(set(waiting))))
        held = collections.Counter(_owner(it) for it in batch)
        index, last_start = 0, None
        while index < len(self._items) and len(batch) < self.max_batch_size:
            item = self._items[index]
            if item.future.done():
                del self._items[index]
                continue
            if last_start is not None and item.start > last_start:
                return False
            if held[_owner(item)] >= share:  # its request has its share: later items may go ahead of it
                index += 1
                continue
            if not self._similar(batch, item):
                last_start = item.start if last_start is None else last_start
                index += 1
                continue
            if not self._within_budget(batch, item):
                return True
            del self._items[index]
            self._vtime = max(self._vtime, item.start)
            held[_owner(item)] += 1
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
        self._advance(batch)
        if not self._items and not self._background:
            self._nonempty.clear()
        if len(self._items) < self.max_batch_size:
            self.full_batch_event.clear()
        return batch


def _owner(item: WorkItem) -> int:
    """The identity of the request an item belongs to (an item without one is a request of its own)."""
    return id(item.request if item.request is not None else item)
