"""Dashboard sign-in: one-time tokens, sessions and their CSRF tokens (no I/O, no HTTP).

A browser cannot sign SharedKey requests, so the dashboard has its own
sign-in, as Jupyter does:

* ``hpcbatch dashboard`` asks the service for a **one-time token** with a
  SharedKey-signed ``POST /dashboard/tokens`` (only a holder of the account
  key can mint one) and prints ``{endpoint}/dashboard/signin?token=...``. The
  token works once, within :data:`TOKEN_TTL_S`.
* The sign-in page also accepts the **account key** itself.

Either opens a **session**: a random ID the browser keeps in an ``HttpOnly``,
``SameSite=Strict`` cookie (``Secure`` over HTTPS), valid for
:data:`SESSION_TTL_S` after its last use. Each session has a **CSRF token**
that the page sends in the ``X-CSRF-Token`` header of every action; an action
without it (or with another session's) is refused. Only hashes of tokens and
session IDs are kept, compared in constant time, and everything lives in the
service's memory: a restart signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SESSION_TTL_S", "TOKEN_TTL_S", "Session", "Sessions"]

TOKEN_TTL_S = 300.0
"""Seconds a one-time sign-in token stays valid."""

SESSION_TTL_S = 8 * 3600.0
"""Seconds a session stays valid after its last request."""

MAX_SESSIONS = 1000
"""Most sessions kept; the least recently used is dropped beyond it."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Session:
    """One signed-in browser.

    Attributes
    ----------
    csrf
        The token every action of this session must carry (``X-CSRF-Token``).
    how
        How it signed in: ``"token"`` or ``"key"``.
    expires
        Monotonic time (s) after which the session is gone unless used.
    """

    csrf: str
    how: str
    expires: float


class Sessions:
    """One-time sign-in tokens and the sessions they open.

    Parameters
    ----------
    account_key
        The account's base64 SharedKey, accepted by :meth:`sign_in_with_key`.
    clock
        Monotonic clock in seconds (tests may pass their own).
    """

    def __init__(self, account_key: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._key_digest = _digest(account_key)
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, Session] = {}

    def mint_token(self) -> str:
        """Return a new one-time sign-in token (URL-safe, 256 bits), valid :data:`TOKEN_TTL_S`."""
        now = self._clock()
        self._tokens = {d: t for d, t in self._tokens.items() if t > now}
        token = secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = now + TOKEN_TTL_S
        return token

    def sign_in_with_token(self, token: str) -> tuple[str, Session] | None:
        """Spend a one-time token; return ``(session id, session)``, or None when it is
        unknown, spent or expired."""
        expires = self._tokens.pop(_digest(token), None)
        if expires is None or expires <= self._clock():
            return None
        return self._open("token")

    def sign_in_with_key(self, key: str) -> tuple[str, Session] | None:
        """Open a session for the account key; None when ``key`` is not it."""
        if not hmac.compare_digest(_digest(key.strip()), self._key_digest):
            return None
        return self._open("key")

    def _open(self, how: str) -> tuple[str, Session]:
        now = self._clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), how=how, expires=now + SESSION_TTL_S)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value (its lifetime renewed), or None."""
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        now = self._clock()
        if session is None or session.expires <= now:
            self._sessions.pop(digest, None)
            return None
        session.expires = now + SESSION_TTL_S
        return session

    def sign_out(self, session_id: str | None) -> None:
        """End a session (nothing happens for an unknown one)."""
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        """Whether ``presented`` is the session's CSRF token (constant-time)."""
        return bool(presented) and hmac.compare_digest(str(presented), session.csrf)
