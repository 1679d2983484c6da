"""Batch semantics with no I/O: wire models, states, OData, formulas, schedules, events."""
