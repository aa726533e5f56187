"""The admission rules of a submit, on counts as the store answers them (no server, no clock)."""

from __future__ import annotations

import pytest

from vidqueue.api.limits import check
from vidqueue.config import LimitsSettings
from vidqueue.errors import QueueFull, RateLimited
from vidqueue.store import Admission

NOW = 1_700_000_000.0


def _seen(recent: tuple[float, ...] = (), active: int = 0, queued: int = 0) -> Admission:
    return Admission(now=NOW, recent=recent, active=active, queued=queued)


def test_no_limits_admit_anything() -> None:
    check(LimitsSettings(), "o", _seen(recent=(NOW,) * 5, active=10**6, queued=10**6))
    check(LimitsSettings(requests_per_minute=0, max_active_per_org=0, max_queued=0), "o", _seen(active=5))


def test_the_per_minute_limit_waits_for_the_oldest_counted_submit_to_leave_the_window() -> None:
    limits = LimitsSettings(requests_per_minute=3)
    with pytest.raises(RateLimited) as caught:
        check(limits, "acme", _seen(recent=(NOW - 1, NOW - 5, NOW - 40.5)))
    assert caught.value.code == "rate_limited" and caught.value.retry_after == 20  # 60 - 40.5, rounded up
    assert "'acme'" in caught.value.message and "3 requests per minute" in caught.value.message


def test_the_per_minute_limit_admits_once_the_oldest_left_the_window() -> None:
    check(LimitsSettings(requests_per_minute=3), "o", _seen(recent=(NOW - 1, NOW - 5, NOW - 60.1)))
    check(LimitsSettings(requests_per_minute=3), "o", _seen(recent=(NOW - 1, NOW - 5)))


def test_the_per_minute_retry_after_is_at_least_one_second_and_at_most_a_minute() -> None:
    limits = LimitsSettings(requests_per_minute=1)
    with pytest.raises(RateLimited) as almost:
        check(limits, "o", _seen(recent=(NOW - 59.99,)))
    assert almost.value.retry_after == 1
    with pytest.raises(RateLimited) as skewed:  # stamped by an API machine whose clock runs ahead
        check(limits, "o", _seen(recent=(NOW + 30,)))
    assert skewed.value.retry_after == 60


def test_max_active_refuses_at_the_limit_with_a_short_retry_after() -> None:
    limits = LimitsSettings(max_active_per_org=2)
    check(limits, "o", _seen(active=1))
    with pytest.raises(RateLimited) as caught:
        check(limits, "o", _seen(active=2))
    assert caught.value.code == "too_many_active" and caught.value.retry_after == 5
    assert "limits.max_active_per_org" in caught.value.message


def test_the_queue_cap_is_a_503_not_a_429() -> None:
    with pytest.raises(QueueFull) as caught:
        check(LimitsSettings(max_queued=10), "o", _seen(queued=10))
    assert caught.value.code == "queue_full" and caught.value.retry_after >= 1
