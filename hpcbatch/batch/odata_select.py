"""OData ``$select`` and ``$expand`` of Batch list and get operations, and the
error every OData query parameter raises: the pure half, without the ``$filter``
parser (:mod:`hpcbatch.batch.odata`), so a client trimming its output imports no
parser.

From the Batch document "Create queries to list Batch resources efficiently":

``$select``
    A comma-separated list of property names (``id, state, stateTransitionTime``)
    that limits which properties each returned item carries: :func:`parse_select`
    checks the names, :func:`apply_select` trims a wire (camelCase JSON) item.
    Names are case-sensitive; nested properties use ``/`` (``executionInfo/exitCode``).
``$expand``
    Extra data fetched in the same call; Batch supports only ``stats``:
    :func:`parse_expand`.

An unknown or malformed name is a ``400 (Bad Request)``:
:class:`InvalidQueryParameterError` (``InvalidQueryParameterValue``), whose
``values`` name the query parameter, its value and the reason, with the
offender's column.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from hpcbatch.batch.errors import BadRequestError

__all__ = [
    "EXPANDABLE",
    "MAX_SELECT_DEPTH",
    "MAX_SELECT_LENGTH",
    "InvalidQueryParameterError",
    "apply_select",
    "parse_expand",
    "parse_select",
]

#: ``$expand`` values Batch supports ("Currently, it only supports statistics
#: information").
EXPANDABLE: frozenset[str] = frozenset({"stats"})

#: Longest ``$select`` or ``$expand`` accepted, in characters.
MAX_SELECT_LENGTH = 8192

#: Most ``/``-separated parts in one ``$select`` name (``executionInfo/failureInfo/code``
#: has 3; Batch's deepest property path has 5).
MAX_SELECT_DEPTH = 8


class InvalidQueryParameterError(BadRequestError):
    """HTTP 400 ``InvalidQueryParameterValue``: a ``$filter``, ``$select`` or
    ``$expand`` Batch cannot evaluate.

    The error's ``values`` are Batch's: ``QueryParameterName`` (``"$filter"``),
    ``QueryParameterValue`` (the text as given) and ``Reason``; the message is
    the reason.

    Parameters
    ----------
    parameter
        ``"$filter"``, ``"$select"`` or ``"$expand"``.
    text
        The query parameter's value, as given.
    reason
        A sentence naming the offending property or token and its column.
    column
        1-based character position of the offender in ``text`` (None when the
        whole value is at fault).
    token
        The offending property name or token, when there is one.
    """

    code = "InvalidQueryParameterValue"

    def __init__(
        self,
        parameter: str,
        text: str,
        reason: str,
        *,
        column: int | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(
            reason,
            values={
                "QueryParameterName": parameter,
                "QueryParameterValue": text,
                "Reason": reason,
            },
        )
        self.parameter = parameter
        self.text = text
        self.reason = reason
        self.column = column
        self.token = token


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")


def _split_list(text: str) -> list[tuple[str, int]]:
    """Split a comma-separated list into ``(item, 1-based column)``, items stripped."""
    items: list[tuple[str, int]] = []
    start = 0
    for part in text.split(","):
        stripped = part.strip()
        lead = len(part) - len(part.lstrip())
        items.append((stripped, start + lead + 1))
        start += len(part) + 1
    return items


def parse_select(text: str, allowed: Iterable[str]) -> list[str]:
    """Parse a Batch ``$select``: comma-separated property names.

    From the Batch document "Create queries to list Batch resources
    efficiently": "The select string consists of a comma-separated list of
    property names", e.g. ``id, state, stateTransitionTime``. Names are
    case-sensitive; nested properties use ``/`` (``executionInfo/exitCode``).

    Parameters
    ----------
    text
        The ``$select`` value; whitespace around names is ignored. Blank text
        returns ``[]`` (callers treat that as "no ``$select``").
    allowed
        The resource's selectable wire names. A nested name is also accepted
        when one of its parents is allowed (``executionInfo/exitCode`` when
        ``executionInfo`` is).

    Returns
    -------
    list[str]
        The names in the order given, without duplicates.

    Raises
    ------
    InvalidQueryParameterError
        ``InvalidQueryParameterValue`` with ``QueryParameterName`` ``$select``,
        naming the unknown or malformed name and its column.
    """
    return _parse_names("$select", text, list(allowed), nested=True)


def _check_length(parameter: str, text: str) -> None:
    if len(text) > MAX_SELECT_LENGTH:
        raise InvalidQueryParameterError(
            parameter, text,
            f"{parameter} is {len(text)} characters long; the limit is {MAX_SELECT_LENGTH}",
            column=MAX_SELECT_LENGTH + 1)


def _parse_names(parameter: str, text: str, allowed: list[str], *, nested: bool) -> list[str]:
    if not text or not text.strip():
        return []
    _check_length(parameter, text)
    allowed_set = set(allowed)
    out: list[str] = []
    seen: set[str] = set()
    for name, column in _split_list(text):
        if not name:
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"empty property name in {parameter} at column {column}",
                column=column,
                token="",
            )
        if not _NAME.fullmatch(name):
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"invalid property name '{name}' in {parameter} at column {column}; "
                "names are comma-separated, nested with '/'",
                column=column,
                token=name,
            )
        if name.count("/") >= MAX_SELECT_DEPTH:
            raise InvalidQueryParameterError(
                parameter, text,
                f"property name '{name[:64]}...' in {parameter} at column {column} nests "
                f"deeper than {MAX_SELECT_DEPTH} levels",
                column=column, token=name)
        ok = name in allowed_set
        if not ok and nested:
            parts = name.split("/")
            ok = any("/".join(parts[:i]) in allowed_set for i in range(1, len(parts)))
        if not ok:
            same = [a for a in allowed if a.lower() == name.lower()]
            hint = (
                f" (property names are case-sensitive: did you mean '{same[0]}'?)" if same else ""
            )
            raise InvalidQueryParameterError(
                parameter,
                text,
                f"unknown property '{name}' in {parameter} at column {column}{hint}; "
                f"known properties: {', '.join(allowed) or 'none'}",
                column=column,
                token=name,
            )
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def apply_select(obj: Mapping[str, Any], selected: Iterable[str]) -> dict[str, Any]:
    """Keep only the selected properties of a wire (camelCase JSON) dict.

    Parameters
    ----------
    obj
        One item as the REST API returns it (a task, job, pool, ...).
    selected
        Names from :func:`parse_select`; ``a/b`` keeps ``obj["a"]["b"]`` inside
        ``{"a": {...}}``. Selecting a parent keeps it whole.

    Returns
    -------
    dict
        A new dict in ``obj``'s key order; selected properties ``obj`` lacks
        are simply absent (as are parents none of whose selected children
        exist). ``obj`` is not modified.
    """
    tree: dict[str, Any] = {}
    for name in selected:
        node = tree
        parts = name.split("/")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break  # a parent is selected whole
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})
    return _pick(obj, tree)


def _pick(obj: Mapping[str, Any], tree: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        want = tree.get(key)
        if want is None:
            continue
        if want is True:
            out[key] = value
        elif isinstance(value, Mapping):
            sub = _pick(value, want)
            if sub:
                out[key] = sub
    return out


def parse_expand(text: str, allowed: Iterable[str] = EXPANDABLE) -> set[str]:
    """Parse a Batch ``$expand``.

    The Batch document "Create queries to list Batch resources efficiently":
    the expand string "is only supported when it is used in listing jobs, job
    schedules, tasks, and pools. Currently, it only supports statistics
    information" -- the one value is ``stats``.

    Parameters
    ----------
    text
        The ``$expand`` value: comma-separated, whitespace ignored; blank text
        returns an empty set.
    allowed
        The values accepted (default :data:`EXPANDABLE`, ``{"stats"}``).

    Returns
    -------
    set[str]

    Raises
    ------
    InvalidQueryParameterError
        ``InvalidQueryParameterValue`` with ``QueryParameterName`` ``$expand``,
        naming the unsupported value and its column.
    """
    allowed_list = sorted(allowed)
    if not text or not text.strip():
        return set()
    _check_length("$expand", text)
    out: set[str] = set()
    for name, column in _split_list(text):
        if name not in allowed_list:
            what = "empty value" if not name else f"unsupported value '{name}'"
            raise InvalidQueryParameterError(
                "$expand",
                text,
                f"{what} in $expand at column {column}; supported: {', '.join(allowed_list)}",
                column=column,
                token=name,
            )
        out.add(name)
    return out
