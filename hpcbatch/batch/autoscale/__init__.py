"""Autoscale formulas: Batch's autoscale "language", parsed and evaluated.

This package implements the language of the Batch document "Create an automatic
scaling formula for scaling compute nodes in a Batch pool" (reference/, 2017),
with the additions of today's version of that page ("Create a formula to
automatically scale compute nodes in a Batch pool"): ``$TargetDedicatedNodes``
(``$TargetDedicated`` is its old name), ``$TargetLowPriorityNodes``
(``$TargetLowPriority``), ``$CurrentDedicatedNodes``, ``$CurrentLowPriorityNodes``,
``$UsableNodeCount``, ``$PreemptedNodeCount`` and ``$TaskSlotsPerNode``.

It is pure: no I/O, no clock. The evaluation time and the metric samples come in
a :class:`MetricsSnapshot` (or anything shaped like :class:`Metrics`), and
``rand()`` draws from an injected :class:`random.Random`.

Modules, one per phase
----------------------
* :mod:`~hpcbatch.batch.autoscale.values`: the limits, the service-defined
  variables, the types and their constants, :class:`MetricsSnapshot`,
  :class:`AutoScaleResult`, :class:`FormulaError` and the evaluation errors.
* :mod:`~hpcbatch.batch.autoscale.syntax`: the syntax tree.
* :mod:`~hpcbatch.batch.autoscale.parser`: the grammar, syntax errors, size
  limits and :func:`parse_formula`.
* :mod:`~hpcbatch.batch.autoscale.operations`: the operations table (types and
  arithmetic) and the functions' and methods' signatures.
* :mod:`~hpcbatch.batch.autoscale.checker`: the static checks
  :func:`parse_formula` ends with.
* :mod:`~hpcbatch.batch.autoscale.evaluator`: :func:`evaluate`, the built-in
  functions and metric methods, and the ``autoScaleRun`` results.

The package's ``__all__`` is the public API; the modules' other names are
shared between the phases only.

Language, as the document describes it
--------------------------------------
* A formula is at most 8 KB and at most 100 statements. Statements are
  assignments (``$x = expr``) or a bare function call (``stop()``), separated
  by ``;`` and/or line breaks; an expression may itself span lines. ``//``
  (and ``/* */``) comments are allowed.
* Service-defined variables start with ``$``. For user-defined variables the
  ``$`` is optional, and ``x`` and ``$x`` name the same variable.
* Types: double, doubleVec, doubleVecList (a function's comma-separated list of
  doubles and doubleVecs, flattened into one doubleVec), string, timestamp
  (members ``year month day weekday hour minute second``; ``weekday`` counts
  Sunday as 0, Monday as 1) and timeinterval (``TimeInterval_Zero`` ...
  ``TimeInterval_Year``).
* Operations are exactly the document's operations table; anything else is a
  type error. ``&&``, ``||`` and ``?:`` treat a nonzero double as true and
  evaluate only what they need.
* Metric variables (``$CPUPercent``, ``$ActiveTasks``, ...) are objects with the
  methods ``GetSample``, ``GetSamplePercent``, ``GetSamplePeriod``, ``Count``
  and ``HistoryBeginTime``; samples are nominally 30 seconds apart.

Errors
------
:func:`parse_formula` raises :class:`FormulaError` (HTTP 400,
``InvalidAutoScaleFormula``) for syntax errors, unknown functions, methods and
variables, assignments to read-only variables, static type errors and the size
limits; the message names the line, column and offending token.

:func:`evaluate` does not raise for evaluation errors: like Batch's
``autoScaleRun`` it returns them in :attr:`AutoScaleResult.error`, shaped
``{"code", "message", "values": [{"name": "Message", "value": "Line 1, Col 24: ..."}]}``
and leaves the pool's targets unchanged. Too few samples give Batch's documented
``InsufficientSampleData`` error; every other evaluation error uses
``FormulaEvaluationError`` (a code of ours: Batch does not document one).

Targets
-------
``$TargetDedicatedNodes`` and ``$TargetLowPriorityNodes`` start at the pool's
current targets. Their final values are rounded down to whole nodes (Batch
truncates a computed 0.5 node to 0) and negative values become 0.
``$NodeDeallocationOption`` starts at ``requeue``.
"""


from __future__ import annotations

from hpcbatch.batch.autoscale.evaluator import evaluate
from hpcbatch.batch.autoscale.parser import Formula, parse_formula
from hpcbatch.batch.autoscale.values import (
    MAX_FORMULA_BYTES,
    MAX_NESTING,
    MAX_STATEMENTS,
    METRIC_VARIABLES,
    NODE_DEALLOCATION_OPTIONS,
    SAMPLE_PERIOD,
    AutoScaleResult,
    FormulaError,
    Metrics,
    MetricsSnapshot,
    Sample,
    TimeInterval,
)

__all__ = [
    "MAX_FORMULA_BYTES",
    "MAX_NESTING",
    "MAX_STATEMENTS",
    "METRIC_VARIABLES",
    "NODE_DEALLOCATION_OPTIONS",
    "SAMPLE_PERIOD",
    "AutoScaleResult",
    "Formula",
    "FormulaError",
    "Metrics",
    "MetricsSnapshot",
    "Sample",
    "TimeInterval",
    "evaluate",
    "parse_formula",
]
