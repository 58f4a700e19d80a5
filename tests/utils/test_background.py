"""rrnet.utils.background.ahead: same items, same order, one ahead on another thread."""

from __future__ import annotations

import threading
import time

import pytest

from rrnet.utils.background import ahead


class Producer:
    """An iterator recording where and when it computed each item, and whether it closed."""

    def __init__(self, n: int, fail_at: int | None = None, seconds: float = 0.0) -> None:
        self.n, self.fail_at, self.seconds = n, fail_at, seconds
        self.started: list[int] = []
        self.threads: set[str] = set()
        self.closed = threading.Event()

    def __call__(self):
        try:
            for i in range(self.n):
                self.started.append(i)
                self.threads.add(threading.current_thread().name)
                time.sleep(self.seconds)
                if i == self.fail_at:
                    raise KeyError(f"item {i}")
                yield i
        finally:
            self.closed.set()


def test_same_items_in_order_computed_on_another_thread():
    producer = Producer(20)
    assert list(ahead(producer, name="rrnet-test")) == list(range(20))
    assert producer.threads == {"rrnet-test"}
    assert producer.closed.is_set()
    assert list(ahead(Producer(0))) == []


def test_at_most_one_item_ahead_of_the_consumer():
    producer = Producer(6, seconds=0.01)
    for k, item in enumerate(ahead(producer)):
        assert item == k
        time.sleep(0.05)  # the producer has time to run ahead, if it would
        assert len(producer.started) <= k + 2  # item k in use, k + 1 computed, no more


def test_the_next_item_is_computed_while_this_one_is_used():
    producer = Producer(3, seconds=0.3)
    items = ahead(producer)
    t0 = time.perf_counter()
    for _ in items:
        time.sleep(0.3)  # the consumer's work overlaps the producer's
    assert time.perf_counter() - t0 < 0.3 * 6 - 0.25  # serial would take 1.8 s


def test_an_error_of_the_producer_is_raised_in_the_consumer_in_place():
    got = []
    with pytest.raises(KeyError, match="item 3"):
        for item in ahead(Producer(10, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]
    with pytest.raises(ZeroDivisionError):
        list(ahead(lambda: iter([1 / 0])))


def test_a_consumer_stopping_early_stops_and_closes_the_producer():
    producer = Producer(1000)
    items = ahead(producer)
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert producer.closed.is_set()  # closed before close() returned
    assert len(producer.started) <= 3


def test_an_error_of_the_consumer_waits_for_the_item_in_progress():
    producer = Producer(100, seconds=0.2)
    with pytest.raises(RuntimeError, match="consumer"):
        for _ in ahead(producer, name="rrnet-busy"):
            time.sleep(0.01)  # the producer is now computing the next item
            raise RuntimeError("consumer")
    assert producer.closed.is_set() and len(producer.started) == 2
    assert not any(t.name == "rrnet-busy" for t in threading.enumerate())
