"""The shared connection counts (service/balance.py) across real forks: a worker over its even
share closes one connection per surplus, not all it holds; a worker that exited stops counting;
a share is even rounded up with slack at high counts, so that balanced workers never churn."""

from __future__ import annotations

import os

from service.balance import NOT_RUNNING, Balance


def holding(balance: Balance, index: int, opened: int) -> None:
    """This process as the worker of slot ``index``, with ``opened`` connections open."""
    balance.join(index)
    for _ in range(opened):
        balance.opened()


def in_fork(balance: Balance, index: int, opened: int) -> None:
    """Another worker process, holding ``opened`` connections in slot ``index``."""
    pid = os.fork()
    if pid == 0:
        try:
            holding(balance, index, opened)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_counts_are_shared_across_forks() -> None:
    balance = Balance(3)
    assert list(balance.slots) == [NOT_RUNNING] * 3
    in_fork(balance, 1, opened=5)
    assert list(balance.slots) == [NOT_RUNNING, 5, NOT_RUNNING]


def test_a_worker_over_its_share_closes_only_the_surplus() -> None:
    balance = Balance(2)
    in_fork(balance, 1, opened=0)  # the other worker runs and holds nothing
    holding(balance, 0, 8)
    closes = [balance.should_close() for _ in range(8)]
    # total 8 over 2 running: a share of 4; the first request on each of 4 connections moves it.
    assert closes == [True] * 4 + [False] * 4
    assert balance.slots[0] == 4
    # A connection told to close is not counted twice when it goes ...
    balance.closed(told_to_close=True)
    assert balance.slots[0] == 4
    # ... one that its client closed is.
    balance.closed(told_to_close=False)
    assert balance.slots[0] == 3


def test_a_worker_alone_keeps_all_its_connections() -> None:
    balance = Balance(2)
    holding(balance, 0, 6)  # the other has not started
    assert not any(balance.should_close() for _ in range(6))


def test_an_exited_worker_no_longer_takes_a_share() -> None:
    balance = Balance(2)
    in_fork(balance, 1, opened=3)
    holding(balance, 0, 3)
    assert not balance.should_close()  # 3 and 3
    balance.left(1)  # its connections died with it: worker 0 is alone
    assert balance.slots[1] == NOT_RUNNING
    balance.opened()
    assert not balance.should_close()


def test_slack_at_high_counts() -> None:
    balance = Balance(2)
    in_fork(balance, 1, opened=28)
    holding(balance, 0, 36)
    assert not balance.should_close()  # 36 of 64: within 32 + 4
    balance.opened()
    assert not balance.should_close()  # 37 of 65: within 33 + 4
    balance.opened()
    assert balance.should_close()  # 38 of 66


def test_the_supervisor_itself_never_closes() -> None:
    balance = Balance(2)  # not joined: the supervisor, or a single process
    assert not balance.should_close()


def test_a_worker_knows_when_no_other_holds_a_connection() -> None:
    balance = Balance(3)
    in_fork(balance, 1, opened=0)  # running, idle; worker 2 has not started
    holding(balance, 0, 1)
    assert balance.others_idle()  # a lone request here may have every core
    in_fork(balance, 2, opened=2)
    assert not balance.others_idle()
    balance.left(2)
    assert balance.others_idle()
    # A connection of ours on its way to another worker: that one is about to be busy.
    balance.opened()
    in_fork(balance, 1, opened=0)
    assert balance.should_close()
    assert not balance.others_idle()
