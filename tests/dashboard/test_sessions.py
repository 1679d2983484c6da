"""Dashboard sign-in tokens and sessions (pure: a fake clock, no HTTP)."""

from __future__ import annotations

from hpcbatch.api.dashboard.sessions import SESSION_TTL_S, TOKEN_TTL_S, Sessions
from hpcbatch.batch.sharedkey import generate_account_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_signs_in_once_and_only_within_its_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(generate_account_key(), clock)
    token = sessions.mint_token()
    opened = sessions.sign_in_with_token(token)
    assert opened is not None and opened[1].how == "token"
    assert sessions.sign_in_with_token(token) is None  # spent
    late = sessions.mint_token()
    clock.now += TOKEN_TTL_S + 1
    assert sessions.sign_in_with_token(late) is None  # expired
    assert sessions.sign_in_with_token("forged") is None


def test_the_key_signs_in_and_another_does_not() -> None:
    key = generate_account_key()
    sessions = Sessions(key, Clock())
    assert sessions.sign_in_with_key(generate_account_key()) is None
    assert sessions.sign_in_with_key("") is None
    opened = sessions.sign_in_with_key(key)
    assert opened is not None and opened[1].how == "key"


def test_sessions_expire_unused_renew_when_used_and_end_on_sign_out() -> None:
    clock = Clock()
    key = generate_account_key()
    sessions = Sessions(key, clock)
    opened = sessions.sign_in_with_key(key)
    assert opened is not None
    sid, session = opened
    clock.now += SESSION_TTL_S - 1
    assert sessions.get(sid) is session  # used: renewed
    clock.now += SESSION_TTL_S - 1
    assert sessions.get(sid) is session
    clock.now += SESSION_TTL_S + 1
    assert sessions.get(sid) is None  # unused too long
    sid2, _ = sessions.sign_in_with_key(key) or ("", None)
    sessions.sign_out(sid2)
    assert sessions.get(sid2) is None
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_csrf_is_the_sessions_own_token() -> None:
    key = generate_account_key()
    sessions = Sessions(key, Clock())
    (_, a), (_, b) = sessions.sign_in_with_key(key), sessions.sign_in_with_key(key)  # type: ignore[misc]
    assert Sessions.csrf_ok(a, a.csrf)
    assert not Sessions.csrf_ok(a, b.csrf)
    assert not Sessions.csrf_ok(a, None) and not Sessions.csrf_ok(a, "")
