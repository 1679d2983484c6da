"""``hpcbatch events``: the service's diagnostic events, from the state dir's event log."""

from __future__ import annotations

import json
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.batch.statedir import EVENTS_FILE
from hpcbatch.client.cli.common import as_json, output_option, state


@click.group()
def events() -> None:
    """Diagnostic events (PoolCreateEvent, TaskStartEvent, TaskFailEvent, ...)."""


@events.command("tail")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they come.")
@click.option("--lines", "-n", default=20, show_default=True, type=click.IntRange(min=0),
              help="Events to show first (0: none, as tail -n 0).")
@click.option("--name", "names", multiple=True, help="Only events of this name (repeatable).")
@output_option
def events_tail(follow: bool, lines: int, names: tuple[str, ...]) -> None:
    """Show the service's latest diagnostic events (from the state dir's events.jsonl).

    With -o json: a JSON array of the events; with --follow, one JSON object a line
    (JSON Lines), as they come."""
    from hpcbatch.store.events import EventLog  # the log's reader: a file, no database

    path = state().service_dir / EVENTS_FILE
    if not path.exists():
        raise HpcbatchError(f"no events yet: {path} does not exist", code="NoEvents")
    log = EventLog(path)
    json_out = as_json()

    def show(event: dict[str, Any]) -> None:
        if names and event.get("name") not in names:
            return
        if json_out:
            click.echo(json.dumps(event))  # JSON Lines (--follow)
        else:
            body = event.get("body", {})
            what = " ".join(f"{k}={body[k]}" for k in ("poolId", "jobId", "id") if k in body)
            click.echo(f"{event.get('time')}  {event.get('name'):<24} {what}")

    recent = [e for e in log.read() if not names or e.get("name") in names]
    recent = recent[len(recent) - lines:] if lines else []
    if json_out and not follow:
        click.echo(json.dumps(recent, indent=2))
        return
    for event in recent:
        show(event)
    if follow:
        try:
            for event in log.follow():
                show(event)
        except KeyboardInterrupt:
            pass
