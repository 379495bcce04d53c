"""A consumer loop's retry timers (dispatcher/retry_timers.py): when to claim again, and
which buckets to claim first."""

from __future__ import annotations

from dispatcher.retry_timers import RetryTimers


def test_a_fired_timer_says_claim_now_and_where_until_the_claim_takes_it() -> None:
    timers = RetryTimers()
    assert not timers.arm(0.0, [], (1, 2))
    assert timers.arm(10.0, [0.5, 2.0], (1, 2))
    assert timers.arm(10.0, [1.0], (3,))
    assert timers.wait(10.0, longest=60.0) == 0.5
    # Past due: claim at once, and keep saying so until a claim has taken them.
    assert timers.wait(11.2, longest=60.0) == 0.0
    assert timers.wait(11.2, longest=60.0) == 0.0
    assert timers.drop_due(11.2) == [(1, 2), (3,)]
    assert abs(timers.wait(11.2, longest=60.0) - 0.8) < 1e-9
    assert timers.drop_due(12.0) == [(1, 2)]
    assert timers.wait(12.0, longest=60.0) == 60.0
