"""The batch-forming policy, on its own: size, padded audio budget, shrinking deadline, abandoned items."""

from __future__ import annotations

import asyncio
import time

import pytest
from asr_inference.backends import DecodeOptions, Prepared
from asr_inference.batch_queue import BatchQueue, WorkItem
from asr_inference.metrics import Metrics


def _item(duration_s: float, enqueued_at: float | None = None) -> WorkItem:
    fut: asyncio.Future = asyncio.get_running_loop().create_future()
    item = WorkItem(Prepared(None, int(duration_s * 100), duration_s), DecodeOptions(), fut)
    if enqueued_at is not None:
        item.enqueued_at = enqueued_at
    return item


async def test_full_batch_is_taken_at_once() -> None:
    q = BatchQueue(max_batch_size=3, max_wait_s=10, max_batch_audio_s=1000, metrics=Metrics())
    items = [_item(1) for _ in range(5)]
    for it in items:
        q.put(it)
    async with asyncio.timeout(1):  # a full batch never waits for the deadline
        batch = await q.wait_for_batch()
    assert batch == items[:3] and len(q) == 2


async def test_padded_audio_budget_cuts_the_batch() -> None:
    q = BatchQueue(max_batch_size=10, max_wait_s=10, max_batch_audio_s=20, metrics=Metrics())
    for d in (2, 3, 6, 1):
        q.put(_item(d))
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)
    # 2 s, 3 s fit (2 x 3 = 6 padded); adding 6 s makes 3 x 6 = 18 <= 20; adding 1 s: 4 x 6 = 24 > 20
    assert [it.prepared.duration_s for it in batch] == [2, 3, 6] and len(q) == 1


async def test_deadline_counts_from_the_first_items_arrival() -> None:
    """Order, not timing: the first item has already waited 4.9 of its 5 s, a second one arrives 2.5 s later.
    A deadline counted from the item's arrival closes the batch before the second item comes; one counted from
    when the batch started forming (5 s from now) would take it in."""
    q = BatchQueue(max_batch_size=8, max_wait_s=5, max_batch_audio_s=1000, metrics=Metrics())
    q.put(_item(1, enqueued_at=time.monotonic() - 4.9))
    second = _item(1)
    timer = asyncio.get_running_loop().call_later(2.5, q.put, second)
    try:
        batch = await asyncio.wait_for(q.wait_for_batch(), 30)  # bounds a hang only
    finally:
        timer.cancel()
    assert len(batch) == 1 and second not in batch and len(q) == 0


async def test_items_arriving_before_the_deadline_join_the_batch() -> None:
    q = BatchQueue(max_batch_size=4, max_wait_s=5, max_batch_audio_s=1000, metrics=Metrics())
    q.put(_item(1))

    async def later() -> None:
        for _ in range(3):
            await asyncio.sleep(0.01)
            q.put(_item(1))

    task = asyncio.create_task(later())
    batch = await asyncio.wait_for(q.wait_for_batch(), 2)  # fills up long before the 5 s deadline
    await task
    assert len(batch) == 4


async def test_abandoned_items_are_skipped_and_leave_the_depth_gauge() -> None:
    metrics = Metrics()
    q = BatchQueue(max_batch_size=4, max_wait_s=0, max_batch_audio_s=1000, metrics=metrics)
    items = [_item(1) for _ in range(4)]
    for it in items:
        q.put(it)
    items[0].future.cancel()  # client went away
    items[2].future.cancel()
    assert metrics.registry.get_sample_value("asr_queue_depth") == 2  # live at every scrape, no sweep needed
    batch = await q.wait_for_batch()
    assert batch == [items[1], items[3]]
    assert metrics.registry.get_sample_value("asr_queue_depth") == 0


@pytest.mark.parametrize("max_wait_s", [0.0, 0.05])
async def test_single_item_runs_after_at_most_max_wait(max_wait_s: float) -> None:
    q = BatchQueue(max_batch_size=16, max_wait_s=max_wait_s, max_batch_audio_s=1000, metrics=Metrics())
    q.put(_item(1))
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert len(batch) == 1


async def test_no_wait_when_no_request_is_on_its_way() -> None:
    """An idle server does not make a lone request wait max_wait_ms for batch-mates that cannot come."""
    q = BatchQueue(max_batch_size=8, max_wait_s=5, max_batch_audio_s=1000, metrics=Metrics())
    q.pending = lambda: 0
    q.put(_item(1))
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)  # far less than the 5 s deadline
    assert len(batch) == 1


async def test_waits_for_a_request_still_on_its_way() -> None:
    q = BatchQueue(max_batch_size=8, max_wait_s=5, max_batch_audio_s=1000, metrics=Metrics())
    on_its_way = [1]
    q.pending = lambda: on_its_way[0]
    q.put(_item(1))

    async def arrives() -> None:
        await asyncio.sleep(0.05)
        q.put(_item(1))
        on_its_way[0] = 0

    task = asyncio.create_task(arrives())
    batch = await asyncio.wait_for(q.wait_for_batch(), 2)
    await task
    assert len(batch) == 2


# --- fair order: start-time fair queuing, an item's cost its audio seconds ------------------------------------------


class _Request:
    """A request's identity (the queue holds it weakly, as the pipeline's token)."""


def _of(request: object, duration_s: float = 1) -> WorkItem:
    item = _item(duration_s)
    item.request = request
    return item


async def test_a_short_request_behind_a_long_file_waits_for_one_of_its_windows_not_all() -> None:
    q = BatchQueue(max_batch_size=2, max_wait_s=10, max_batch_audio_s=1000, metrics=Metrics())
    long_file, short = _Request(), _Request()
    windows = [_of(long_file, 30) for _ in range(8)]
    for w in windows:
        q.put(w)
    clip = _of(short, 5)
    q.put(clip)
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert batch == [windows[0], clip]  # FIFO would have been windows[0], windows[1]; the clip the fifth batch


async def test_a_clip_is_not_padded_to_a_long_files_window() -> None:
    """With a length ratio, the clip passed over by the window's batch leads the next one; the window's batch does
    not reach past it into the file's later windows, and the clip's batch takes other clips, not the next window."""
    q = BatchQueue(max_batch_size=4, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics(), max_length_ratio=4)
    long_file = _Request()
    windows = [_of(long_file, 30) for _ in range(4)]
    for w in windows:
        q.put(w)
    clips = [_of(_Request(), 5) for _ in range(3)]
    for c in clips:
        q.put(c)
    first = await asyncio.wait_for(q.wait_for_batch(), 1)
    second = await asyncio.wait_for(q.wait_for_batch(), 1)
    third = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert first == [windows[0]]  # not windows[0..3]: they start later than the clips passed over
    assert second == clips  # windows[1] (starting at 30 s) is passed over; it comes after the clips (at 0)
    assert third == windows[1:]  # alone, the file's windows batch together


async def test_length_ratio_leaves_short_clips_together() -> None:
    """Under the 2-s floor lengths count as 2 s, so a 0.3-s and a 5-s clip still share a batch (ratio 2.5)."""
    q = BatchQueue(max_batch_size=8, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics(), max_length_ratio=4)
    items = [_item(d) for d in (0.3, 5, 1, 9, 2)]
    for it in items:
        q.put(it)
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert batch == [items[0], items[1], items[2], items[4]]  # 9 s is 4.5 x the 2-s floor: the next batch
    assert await asyncio.wait_for(q.wait_for_batch(), 1) == [items[3]]


async def test_requests_take_turns_and_a_newcomer_starts_at_the_current_virtual_time() -> None:
    q = BatchQueue(max_batch_size=1, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics())
    a, b, c = _Request(), _Request(), _Request()
    a_items, b_items = [_of(a) for _ in range(3)], [_of(b) for _ in range(3)]
    for it in a_items + b_items:
        q.put(it)
    served = [await asyncio.wait_for(q.wait_for_batch(), 1) for _ in range(3)]
    assert [s[0] for s in served] == [a_items[0], b_items[0], a_items[1]]
    late = _of(c)
    q.put(late)  # starts at the current virtual time (1.5 s): after b's second (1 s), before the third items
    rest = [(await asyncio.wait_for(q.wait_for_batch(), 1))[0] for _ in range(4)]
    assert rest == [b_items[1], late, a_items[2], b_items[2]]


async def test_items_without_a_request_keep_their_arrival_order() -> None:
    q = BatchQueue(max_batch_size=10, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics())
    items = [_item(1) for _ in range(5)]
    for it in items:
        q.put(it)
    assert await asyncio.wait_for(q.wait_for_batch(), 1) == items


async def test_new_short_requests_do_not_starve_a_long_file_and_it_gets_its_audio_share() -> None:
    """Every short clip is a new request (starting at the current virtual time); virtual time moves on by the audio
    served, so the file's next 30-s window comes after the short requests got about as much audio each: several
    batches of them (unit cost per item would give one batch, alternating), never none."""
    q = BatchQueue(max_batch_size=4, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics(), max_length_ratio=4)
    long_file = _Request()
    windows = [_of(long_file, 30) for _ in range(2)]
    for w in windows:
        q.put(w)
    clients: list[_Request] = []  # keeps each short request alive while its item waits (the queue holds it weakly)
    order: list[str] = []
    for _ in range(40):
        while sum(1 for it in q._items if it.request is not long_file) < 4:  # closed loop: 4 clients, always back
            clients.append(_Request())
            q.put(_of(clients[-1], 5))
        batch = await asyncio.wait_for(q.wait_for_batch(), 1)
        order.append("W" if batch[0].request is long_file else "s")
        if windows[1] in batch:
            break
    assert order[0] == "W" and order[-1] == "W", order
    assert 3 <= order.count("s") <= 12, order  # 30 s of the file per ~5 s to each of 4 clients a batch: ~6


async def test_background_work_comes_after_every_other_item_and_fills_only_room() -> None:
    """A realtime partial (background) queued first still runs after the uploads queued later; it joins their batch
    when there is room, and while a batch of other work waits there is no room for more of it."""
    q = BatchQueue(max_batch_size=3, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics())
    partial = _item(2)
    partial.background = True
    q.put(partial)
    uploads = [_item(2) for _ in range(4)]
    for u in uploads:
        q.put(u)
    assert q.live_count() == 4 and not q.has_room_for_background()  # background work is not load
    assert await asyncio.wait_for(q.wait_for_batch(), 1) == uploads[:3]
    assert q.has_room_for_background()
    assert await asyncio.wait_for(q.wait_for_batch(), 1) == [uploads[3], partial]  # room left: it joins
    alone = _item(2)
    alone.background = True
    q.put(alone)
    assert await asyncio.wait_for(q.wait_for_batch(), 1) == [alone]  # nothing else waits: it runs


async def test_a_request_fills_only_its_share_of_a_batch_while_others_wait() -> None:
    """A long file's many short segments beside three short requests: the batch holds the file's share of the slots
    (8 slots, 4 requests: 2), not every free slot; alone, the file fills the batch."""
    q = BatchQueue(max_batch_size=8, max_wait_s=0, max_batch_audio_s=1000, metrics=Metrics())
    long_file = _Request()
    segments = [_of(long_file, 2) for _ in range(20)]
    for seg in segments:
        q.put(seg)
    others = [_Request() for _ in range(3)]
    clips = [_of(r, 2) for r in others]
    for c in clips:
        q.put(c)
    batch = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert sorted(map(id, batch)) == sorted(map(id, [*segments[:2], *clips]))
    alone = await asyncio.wait_for(q.wait_for_batch(), 1)
    assert alone == segments[2:10]
