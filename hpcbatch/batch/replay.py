"""The replay cache: each SharedKey signature is accepted once within the date window.

A SharedKey signature covers the verb, path, query, date, body length,
``Content-MD5`` and ``ocp-*`` headers of one request, and Batch accepts a
request dated within 15 minutes of its clock. Without memory, a captured
request could be sent again (or, without ``Content-MD5``, with another body of
the same length) for those 15 minutes. :class:`ReplayCache` remembers the
signatures it has accepted until their date leaves the window.

Bounded and O(1) per request: entries sit in arrival order in an
``OrderedDict``; expired ones are dropped from the front; when ``capacity``
is reached the oldest arrival is evicted and its request date raises a
*floor*: a request dated at or before the floor is refused, since the cache
can no longer prove it new. With synchronised clocks the floor stays far in
the past (``capacity`` / request rate seconds); only a client whose clock
lags by more than that is refused, never a replay accepted.

Pure: no I/O, no clock of its own (the caller passes ``now``).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_CAPACITY", "NONCE_HEADER", "ReplayCache"]

NONCE_HEADER = "ocp-hpcbatch-nonce"
"""A signed header (``ocp-*``) with a random value hpcbatch's clients add to every request,
so two identical requests in one second have different signatures; its presence also makes
a read one-time."""

DEFAULT_CAPACITY = 250_000
"""Signatures remembered at most (about 55 MB of memory when full; see docs/security.md)."""

_KEY_BYTES = 16
"""Signature bytes kept per entry (128 bits: collisions are not a concern)."""


class ReplayCache:
    """Accept each signature once while its request date is within the window.

    Parameters
    ----------
    window_s
        How far a request date may lie from the clock (Batch: 900 s). An entry
        is kept until its date is ``window_s`` (plus one second) in the past.
    capacity
        Most signatures kept; at least 1.
    """

    def __init__(self, window_s: float = 900.0, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def floor(self) -> float:
        """Requests dated at or before this (epoch seconds) are refused; ``-inf`` until evictions."""
        return self._floor

    def admit(self, signature: bytes, issued_at: float, now: float) -> str | None:
        """Record ``signature`` if it is new; else say why the request is refused.

        Parameters
        ----------
        signature
            The request's verified signature (its bytes; the first 16 are kept).
        issued_at
            The request's date (``ocp-date``/``Date``), epoch seconds.
        now
            The clock, epoch seconds.

        Returns
        -------
        str or None
            None: new, now recorded. Otherwise a sentence for the error message.
        """
        horizon = now - self.window_s - 1.0
        seen = self._seen
        while seen:
            oldest_key = next(iter(seen))
            if seen[oldest_key] >= horizon:
                break
            seen.popitem(last=False)
        key = bytes(signature[:_KEY_BYTES])
        if key in seen:
            return ("this signature was already used: a request is accepted once within "
                    f"the {self.window_s:g} s date window (sign each request anew)")
        if issued_at <= self._floor:
            return ("the request date is older than the oldest request the service still "
                    "remembers, so it cannot be told apart from a replay; check the client's "
                    "clock and send it anew")
        if len(seen) >= self.capacity:
            _, evicted = seen.popitem(last=False)
            self._floor = max(self._floor, evicted)
        seen[key] = issued_at
        return None
