"""Form tokens: signed, short-lived, bound to a station, accepted once (pure logic)."""

from __future__ import annotations

import pytest

from mailbridge.relay.web import FormTokens

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock: Clock) -> FormTokens:
    return FormTokens(KEY, lifetime=7200, step=600, clock=clock)


def test_a_token_is_accepted_once(tokens: FormTokens) -> None:
    token = tokens.issue("ncs")
    assert tokens.consume(token, "ncs") is True
    assert tokens.consume(token, "ncs") is False


def test_issue_time_is_coarse(tokens: FormTokens, clock: Clock) -> None:
    first = tokens.issue("ncs").split(".")[0]
    clock.now += 599 - clock.now % 600
    assert tokens.issue("ncs").split(".")[0] == first


def test_token_is_bound_to_its_station_and_key(tokens: FormTokens, clock: Clock) -> None:
    token = tokens.issue("ncs")
    assert tokens.consume(token, "pvs") is False
    assert FormTokens(b"x" * 32, clock=clock).consume(token, "ncs") is False
    assert tokens.consume(token, "ncs") is True  # the failed tries did not use it up


def test_token_expires(tokens: FormTokens, clock: Clock) -> None:
    fresh, old = tokens.issue("ncs"), tokens.issue("ncs")
    clock.now += 7200
    assert tokens.consume(fresh, "ncs") is True  # still inside the lifetime
    clock.now += 600
    assert tokens.consume(old, "ncs") is False


@pytest.mark.parametrize("mangle", [
    lambda t: "",
    lambda t: "garbage",
    lambda t: t + "x",
    lambda t: t[:-2],
    lambda t: "9" + t,  # a period in the future
    lambda t: "-" + t,
    lambda t: "١٢" + t,  # non-ASCII digits
    lambda t: t.replace(".", "", 1),
])
def test_tampered_tokens_are_refused(tokens: FormTokens, mangle: object) -> None:
    assert callable(mangle)
    assert tokens.consume(mangle(tokens.issue("ncs")), "ncs") is False


def test_memory_of_used_tokens_is_bounded(clock: Clock) -> None:
    small = FormTokens(KEY, max_used=3, clock=clock)
    issued = [small.issue("ncs") for _ in range(5)]
    assert all(small.consume(t, "ncs") for t in issued)
    assert len(small._used) == 3
    assert small.consume(issued[-1], "ncs") is False


def test_used_tokens_are_forgotten_once_expired(tokens: FormTokens, clock: Clock) -> None:
    tokens.consume(tokens.issue("ncs"), "ncs")
    clock.now += 3 * 7200
    tokens.consume(tokens.issue("ncs"), "ncs")
    assert len(tokens._used) == 1
