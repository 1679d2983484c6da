"""Policy for nodes that recover by themselves: when to restart a lost node, when to replace it.

A node whose agent died (``NodeLost``) is restarted over SSH by the pool
manager, as "Compute Node - Reboot" does, without anyone asking. Restart
attempts back off exponentially (:attr:`RecoveryPolicy.first_delay_s` doubling
up to :attr:`RecoveryPolicy.max_delay_s`). When the node's host could not be
reached over SSH for :attr:`RecoveryPolicy.replace_after` attempts in a row,
the node is replaced by another free inventory host that matches its pool (the
pool keeps its target node count; the dead node leaves the pool); with no such
host, restarts go on at :attr:`RecoveryPolicy.slow_delay_s` and the node's error
says so.

This module holds no I/O: the pool manager
(:class:`hpcbatch.core.pool_manager.PoolManager`) carries the decisions out.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class Action(enum.StrEnum):
    """What to do with a lost node now."""

    RESTART = "restart"
    """Start the node's process on its host again (its start task runs again)."""
    REPLACE = "replace"
    """Take another free inventory host for the pool; the node leaves the pool."""


RECOVERABLE_CODES = frozenset({"NodeLost", "NodeConnectionFailed", "NodeStartFailed"})
"""``ComputeNodeError`` codes of an ``unusable`` node that the pool manager keeps recovering:
a lost worker, an unreachable host, a node process that did not connect. Other causes
(a refused reimage, a failing start task) wait for the user."""

ENV_PREFIX = "HPCBATCH_NODE_RECOVERY_"
"""Environment variables that override :class:`RecoveryPolicy` fields in a service process:
``HPCBATCH_NODE_RECOVERY_FIRST_DELAY_S``, ``..._MAX_DELAY_S``, ``..._SLOW_DELAY_S``,
``..._REPLACE_AFTER``."""


@dataclass(frozen=True)
class RecoveryPolicy:
    """How the pool manager recovers a lost node.

    Attributes
    ----------
    first_delay_s
        Seconds between the loss and the first restart attempt.
    max_delay_s
        Most seconds between two restart attempts while backing off.
    slow_delay_s
        Seconds between restart attempts once the host was unreachable
        ``replace_after`` times and no free host can replace it.
    replace_after
        Attempts in a row that could not reach the host over SSH before the
        node is replaced (when a free host matches the pool).
    """

    first_delay_s: float = 2.0
    max_delay_s: float = 60.0
    slow_delay_s: float = 120.0
    replace_after: int = 3

    def __post_init__(self) -> None:
        if not (0 <= self.first_delay_s <= self.max_delay_s) or self.slow_delay_s < 0:
            raise ValueError("RecoveryPolicy needs 0 <= first_delay_s <= max_delay_s and "
                             "slow_delay_s >= 0")
        if self.replace_after < 1:
            raise ValueError("RecoveryPolicy.replace_after must be at least 1")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RecoveryPolicy:
        """The default policy with fields overridden by ``HPCBATCH_NODE_RECOVERY_*`` variables.

        Parameters
        ----------
        environ
            The environment (default: ``os.environ``).

        Raises
        ------
        ValueError
            A variable is not a number, or the result is inconsistent.
        """
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for name, kind in (("first_delay_s", float), ("max_delay_s", float),
                           ("slow_delay_s", float), ("replace_after", int)):
            text = env.get(ENV_PREFIX + name.upper())
            if text:
                try:
                    values[name] = kind(text)
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={text!r} is not "
                                     f"{'an integer' if kind is int else 'a number'}") from None
        if "first_delay_s" in values and "max_delay_s" not in values:
            values["max_delay_s"] = max(float(values["first_delay_s"]), cls.max_delay_s)
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class NodeRecovery:
    """One lost node's recovery: attempts made and what comes next (no I/O).

    Parameters
    ----------
    policy
        The recovery policy.

    Attributes
    ----------
    attempts
        Restart attempts made so far.
    unreachable
        Attempts in a row whose host could not be reached over SSH.
    """

    policy: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    attempts: int = 0
    unreachable: int = 0

    @property
    def should_replace(self) -> bool:
        """True once the host was unreachable for ``replace_after`` attempts in a row."""
        return self.unreachable >= self.policy.replace_after

    def next_delay(self, free_host: bool = True) -> float:
        """Seconds to wait before the next attempt.

        Parameters
        ----------
        free_host
            Whether a free inventory host could replace the node now.

        Returns
        -------
        float
            ``first_delay_s * 2**attempts`` capped at ``max_delay_s``;
            ``slow_delay_s`` when the node should be replaced but cannot be.
        """
        if self.should_replace and not free_host:
            return self.policy.slow_delay_s
        return min(self.policy.first_delay_s * 2.0 ** min(self.attempts, 60),
                   self.policy.max_delay_s)

    def next_action(self, free_host: bool) -> Action:
        """Restart the node on its host, or replace it by a free host.

        Parameters
        ----------
        free_host
            Whether a free inventory host matching the pool exists now.
        """
        return Action.REPLACE if self.should_replace and free_host else Action.RESTART

    def failed(self, unreachable: bool) -> None:
        """Record a restart attempt that left the node ``unusable``.

        Parameters
        ----------
        unreachable
            The attempt could not reach the host over SSH (``NodeConnectionFailed``);
            other failures reset the count of unreachable attempts in a row.
        """
        self.attempts += 1
        self.unreachable = self.unreachable + 1 if unreachable else 0

    def describe(self, free_host: bool) -> str:
        """One sentence for the node's error: what the pool manager does next.

        Parameters
        ----------
        free_host
            Whether a free inventory host matching the pool exists now.
        """
        delay = self.next_delay(free_host)
        if self.should_replace and not free_host:
            return (f"restart attempt {self.attempts} failed; the host was unreachable "
                    f"{self.unreachable} times in a row and no free inventory host matches "
                    f"the pool to replace it: retrying every {delay:g} s")
        if self.should_replace:
            return (f"restart attempt {self.attempts} failed; the host was unreachable "
                    f"{self.unreachable} times in a row: replacing the node by a free host")
        return f"restart attempt {self.attempts} failed; retrying in {delay:g} s"
