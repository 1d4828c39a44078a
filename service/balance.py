"""Kept-alive connections spread evenly over the worker processes.

The workers share one listening socket (service/workers.py), and a worker woken for a pending
connection accepts every connection queued at that moment (libuv accepts until the queue is
empty). A client that opens its pool at once (wrk's 8, a proxy's, a browser's 6) can so land all
of it on one worker, which then serves it alone, the other idle, for as long as the connections
live: JPEG at c=8 ran at 350-430 req/s split 8/0 against 550-690 split 4/4
(benchmarks/README.md).

Each worker publishes how many of its connections stay open in its slot of an array shared by
all (an anonymous shared mapping made before the fork). A worker holding more than an even share
answers the next request on one of them with ``Connection: close``; the client's new connection
goes to whichever worker waits in accept first, the less busy one as a rule. Only kept-alive
connections are moved, and only one request's worth each: HTTP clients reconnect on their own.

The same counts tell a worker when no other holds a connection at all: its lone request may then
have every core (the lone session's threads, service/fastlane.py), where otherwise it has its
share.
"""

from __future__ import annotations

import mmap

NOT_RUNNING = -1  # a slot whose worker has not started, or has exited


class Balance:
    """The shared connection counts of ``workers`` processes; ``join`` makes it a worker's own."""

    def __init__(self, workers: int) -> None:
        self._map = mmap.mmap(-1, 8 * workers)  # MAP_SHARED | MAP_ANONYMOUS: one for all forks
        self.slots = memoryview(self._map).cast("q")
        for index in range(workers):
            self.slots[index] = NOT_RUNNING
        self.index: int | None = None
        self.staying = 0  # this worker's connections that have not been told to close
        self.leaving = 0  # told to close and not closed yet: their clients are coming back

    def join(self, index: int) -> None:
        """In a worker at its start: the slot it counts in."""
        self.index, self.staying, self.leaving = index, 0, 0
        self.slots[index] = 0

    def left(self, index: int) -> None:
        """In the supervisor, when a worker exited: its connections are gone with it."""
        self.slots[index] = NOT_RUNNING

    def _publish(self) -> None:
        if self.index is not None:
            self.slots[self.index] = self.staying

    def opened(self) -> None:
        self.staying += 1
        self._publish()

    def closed(self, told_to_close: bool) -> None:
        if told_to_close:
            self.leaving -= 1
        else:
            self.staying -= 1
            self._publish()

    def should_close(self) -> bool:
        """Whether a request just read should be this connection's last; if so it is counted as
        gone now, so that one surplus closes one connection, not every one it holds."""
        if self.index is None:
            return False
        running = [count for count in self.slots if count != NOT_RUNNING]
        # The connections on their way to another worker still count in the total: without them
        # requests on several connections at once would each see a smaller total and close more.
        total = sum(running) + self.leaving
        # An even share, rounded up, and a little slack at high counts (36/28 of 64 stays): each
        # move costs the client a reconnect, and a small surplus costs no throughput.
        share = -(-total // len(running)) + total // (8 * len(running))
        if self.staying <= share:
            return False
        self.staying -= 1
        self.leaving += 1
        self._publish()
        return True

    def others_idle(self) -> bool:
        """Whether no other worker holds a connection, and none of ours is on its way to one."""
        if self.leaving:
            return False
        return all(count <= 0 for i, count in enumerate(self.slots) if i != self.index)


_balance: Balance | None = None


def install(balance: Balance | None) -> None:
    """Made before the fork by the supervisor; None (one process) turns the balancing off."""
    global _balance
    _balance = balance


def current() -> Balance | None:
    return _balance


def others_idle() -> bool:
    """Whether this process is the only one with connections (always so with one process)."""
    return _balance is None or _balance.others_idle()
