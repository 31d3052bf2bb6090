"""Form tokens: signed, short-lived, bound to a station, accepted once (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime

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


class Used(dict[str, datetime]):
    """What RelayStore.use_form_token keeps, in memory: digest -> valid until."""

    def __call__(self, digest: str, valid_until: datetime) -> bool:
        return self.setdefault(digest, valid_until) is valid_until


@pytest.fixture
def used() -> Used:
    return Used()


@pytest.fixture
def tokens(clock: Clock, used: Used) -> FormTokens:
    return FormTokens(KEY, used, lifetime=7200, step=600, clock=clock)


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
    assert FormTokens(b"x" * 32, Used(), clock=clock).consume(token, "ncs") is False
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


def test_a_used_token_is_kept_as_a_digest_until_it_expires(
        tokens: FormTokens, clock: Clock, used: Used) -> None:
    issued_at = clock.now
    token = tokens.issue("ncs")
    assert tokens.consume(token, "ncs") is True
    [(digest, valid_until)] = used.items()
    nonce = token.split(".")[1]
    assert len(digest) == 64 and nonce not in digest and token not in digest
    # test_token_expires: valid 7200 s after issue, expired 600 s later
    assert issued_at + 7200 < valid_until.timestamp() <= issued_at + 7800
    assert valid_until.tzinfo is UTC
    assert tokens.consume(tokens.issue("ncs"), "ncs") is True and len(used) == 2
