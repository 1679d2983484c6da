"""The ``hpcbatch`` command line, shaped like ``az batch``.

Every command that talks to the service goes through :class:`hpcbatch.BatchClient`
(found by :meth:`BatchClient.from_environment`: ``AZURE_BATCH_ENDPOINT``/
``AZURE_BATCH_ACCOUNT``/``AZURE_BATCH_ACCESS_KEY``, else the running service of the
state dir). Lists and shows print a table for people, or the Batch wire JSON
with ``--output json``. Service errors print ``error: {code}: {message}`` and exit 1.

Examples
--------
::

    hpcbatch service start --detach
    hpcbatch hosts add --file hosts.yaml
    hpcbatch pool create --id p --vm-size any --target-dedicated-nodes 2
    hpcbatch pool wait --pool-id p
    hpcbatch job create --id j --pool-id p
    hpcbatch task create --job-id j --json-file tasks.json
    hpcbatch task wait --job-id j
    hpcbatch task file download --job-id j --task-id t1 --file-path stdout.txt --destination -
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click
import psutil
import requests
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Column as RichColumn, Table

from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.execution.mpi import FLAVORS, batch_command_line

F = TypeVar("F", bound=Callable[..., Any])
Column = tuple[str, "str | Callable[[dict[str, Any]], Any]"]

START_TIMEOUT_S = 120.0
"""Seconds ``service start --detach`` waits for the service to answer."""
STOP_TIMEOUT_S = 60.0
"""Seconds ``service stop`` waits after SIGTERM before sending SIGKILL."""


# ----------------------------------------------------------------------- context


@dataclass
class State:
    """What the group's options decide, shared by every command (``ctx.obj``)."""

    state_dir: Path | None = None
    output: str = "table"
    _client: BatchClient | None = None

    @property
    def service_dir(self) -> Path:
        """The state dir: ``--state-dir``, else ``$HPCBATCH_STATE_DIR``, else ``~/.hpcbatch``."""
        from hpcbatch.api.server import default_state_dir

        return (self.state_dir or default_state_dir()).expanduser().resolve()

    @property
    def client(self) -> BatchClient:
        """The client of the service (created on first use)."""
        if self._client is None:
            self._client = BatchClient.from_environment(self.state_dir)
            click.get_current_context().call_on_close(self._client.close)
        return self._client


def state() -> State:
    return click.get_current_context().ensure_object(State)


def client() -> BatchClient:
    return state().client


# ------------------------------------------------------------------------ output


def _wire(obj: Any, partial: bool = False) -> Any:
    """Batch wire JSON of a model (of only its set fields when ``partial``: ``$select``)."""
    if isinstance(obj, BaseModel):
        if partial:
            return {(f.alias or n): getattr(obj, n) for n, f in type(obj).model_fields.items()
                    if n in obj.model_fields_set and getattr(obj, n) is not None}
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(map(str, value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _flatten(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def emit(data: Any, columns: Sequence[Column] = (), *, partial: bool = False) -> None:
    """Print a model, a dict or a list of them, as the chosen ``--output``.

    Parameters
    ----------
    data
        One object (printed as a property/value table) or a list (one row each).
    columns
        ``(header, wire path or function of the wire dict)`` per table column;
        ignored for single objects and for JSON.
    partial
        The models hold only ``$select``-ed properties.
    """
    wire = [_wire(o, partial) for o in data] if isinstance(data, list) else _wire(data, partial)
    if state().output == "json":
        click.echo(json.dumps(wire, indent=2))
        return
    if isinstance(wire, list):
        table = Table(*(header for header, _ in columns), header_style="bold")
        for row in wire:
            table.add_row(*(_cell(get(row) if callable(get) else _get(row, get))
                            for _, get in columns))
    else:
        table = Table("Property", RichColumn("Value", overflow="fold"), header_style="bold")
        for key, value in _flatten(wire):
            table.add_row(key, _cell(value))
    Console(soft_wrap=False).print(table)


def note(message: str) -> None:
    """Tell people what happened (stderr, so stdout stays machine-readable)."""
    click.echo(message, err=True)


def _first_error(node: dict[str, Any]) -> str:
    errors = node.get("errors") or []
    return f"{errors[0].get('code')}: {errors[0].get('message')}" if errors else ""


POOL_COLUMNS: list[Column] = [
    ("Id", "id"), ("VM size", "vmSize"), ("State", "state"), ("Allocation", "allocationState"),
    ("Nodes (current/target)",
     lambda p: f"{p.get('currentDedicatedNodes', 0)}/{p.get('targetDedicatedNodes', 0)}"),
    ("Slots", lambda p: p.get("taskSlotsPerNode") or p.get("maxTasksPerNode") or 1),
]
NODE_COLUMNS: list[Column] = [
    ("Id", "id"), ("State", "state"), ("IP address", "ipAddress"),
    ("Running tasks", "runningTasksCount"), ("Errors", _first_error),
]
JOB_COLUMNS: list[Column] = [
    ("Id", "id"), ("Pool", "poolInfo.poolId"), ("State", "state"),
    ("Priority", lambda j: j.get("priority", 0)),
]
TASK_COLUMNS: list[Column] = [
    ("Id", "id"), ("State", "state"), ("Exit code", "executionInfo.exitCode"),
    ("Node", "nodeInfo.nodeId"), ("Result", "executionInfo.result"),
    ("Failure", "executionInfo.failureInfo.code"),
]
HOST_COLUMNS: list[Column] = [
    ("Name", "name"), ("Address", "address"), ("Port", "port"), ("User", "user"),
    ("Cores", "cores"), ("Labels", "labels"), ("Provider", "provider"), ("Pool", "poolId"),
]
FILE_COLUMNS: list[Column] = [
    ("Name", "name"), ("Directory", "isDirectory"), ("Size (bytes)", "properties.contentLength"),
    ("Last modified", "properties.lastModified"),
]


# ------------------------------------------------------------------ option helpers


def _set_output(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(State).output = value


def output_option(f: F) -> F:
    """``-o/--output [table|json]`` on a command (overrides the group's)."""
    return click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None,
                        expose_value=False, callback=_set_output, is_eager=True,
                        help="Output format (default: the group's --output, else table).")(f)


def _id_option(name: str, what: str) -> Callable[[F], F]:
    return click.option(f"--{name}-id", f"{name}_id", required=True, help=f"The {what} ID.")


pool_id_option = _id_option("pool", "pool")
job_id_option = _id_option("job", "job")
task_id_option = _id_option("task", "task")
node_id_option = _id_option("node", "compute node")


def yes_option(f: F) -> F:
    """``--yes``: do not ask for confirmation."""
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(f)


def json_file_option(what: str) -> Callable[[F], F]:
    """``--json-file F``: the request body in Batch's JSON (``-`` reads stdin)."""
    return click.option("--json-file", type=click.Path(dir_okay=False, allow_dash=True),
                        help=f"File holding the {what} in Batch's REST JSON ('-': stdin). "
                             "Exclusive with the other options.")


def timeout_option(default_s: float) -> Callable[[F], F]:
    return click.option("--timeout-s", type=click.FloatRange(min=0), default=default_s,
                        show_default=True, help="Give up after this many seconds (exit 2).")


def load_json(path: str) -> Any:
    """Read a JSON file; a usage error names the file, line and column when it is not JSON."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint="'--json-file'") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{'stdin' if path == '-' else path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})", param_hint="'--json-file'") from None


def exclusive_with_json(json_file: str | None, names: Sequence[str], required: Sequence[str],
                        values: dict[str, Any]) -> None:
    """Check that ``--json-file`` and the per-property options are not mixed."""
    ctx = click.get_current_context()

    def flags(params: Iterable[str]) -> str:
        opts = {p.name: max(p.opts, key=len) for p in ctx.command.params}
        return ", ".join(opts.get(n, n) for n in params)

    given = [n for n in names
             if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
    if json_file and given:
        raise click.UsageError(f"--json-file cannot be combined with {flags(given)}.")
    missing = [n for n in required if values.get(n) is None]
    if not json_file and missing:
        raise click.UsageError(f"give --json-file, or {flags(missing)}.")


def _parse_env(_: click.Context, __: click.Parameter,
               values: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        out.append({"name": name, "value": value})
    return out


def _parse_duration(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    adapter = TypeAdapter(timedelta)
    try:
        return str(adapter.dump_python(adapter.validate_python(value), mode="json"))
    except ValidationError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 duration such as PT1H30M") from None


# ---------------------------------------------------------------------- the group


class BatchGroup(click.Group):
    """The root group: turns hpcbatch errors into ``error: {code}: {message}``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcbatchError as exc:
            extra = [f"{k}: {v}" for k, v in exc.values.items() if str(v) not in exc.message]
            click.echo(f"error: {exc.code}: {exc.message}"
                       + (f" ({'; '.join(extra)})" if extra else ""), err=True)
            ctx.exit(1)
        except TimeoutError as exc:
            click.echo(f"error: Timeout: {exc}", err=True)
            ctx.exit(2)
        except requests.RequestException as exc:
            click.echo(f"error: ConnectionError: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=BatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Service state dir (default: $HPCBATCH_STATE_DIR, else ~/.hpcbatch). Without "
                   "it, AZURE_BATCH_ENDPOINT/ACCOUNT/ACCESS_KEY name the service when set.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format of every command.")
@click.version_option(package_name="hpcbatch", prog_name="hpcbatch")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, output: str) -> None:
    """Azure Batch's programming model on your own SSH hosts, run by Dask."""
    obj = ctx.ensure_object(State)
    obj.state_dir, obj.output = state_dir, output


# ------------------------------------------------------------------------- service


@cli.group()
def service() -> None:
    """Start, stop and inspect the hpcbatch service of the state dir."""


def _service_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((state_dir / "service.json").read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _healthy(endpoint: str) -> bool:
    try:
        return requests.get(f"{endpoint}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _running(state_dir: Path) -> dict[str, Any] | None:
    info = _service_info(state_dir)
    return info if info and isinstance(info.get("pid"), int) and _alive(info["pid"]) else None


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@service.command("start")
@click.option("--detach", is_flag=True,
              help="Run in the background; log to {state-dir}/service.log.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="REST API port (default 8600; 0: any free port).")
@click.option("--host", default=None, help="Interface of the REST API (default 127.0.0.1).")
@click.option("--database-url", default=None,
              help="SQLAlchemy URL of the store (default: SQLite in the state dir).")
@click.option("--scheduler-host", default=None,
              help="Interface of the Dask scheduler (default 0.0.0.0; 127.0.0.1 for local nodes).")
@output_option
def service_start(detach: bool, port: int | None, host: str | None, database_url: str | None,
                  scheduler_host: str | None) -> None:
    """Start the service (in the foreground unless --detach).

    With --detach, wait until it answers, then print its endpoint, account and key file.
    """
    sdir = state().service_dir
    running = _running(sdir)
    if running:
        raise HpcbatchError(f"a service already runs for {sdir}: {running.get('endpoint')} "
                            f"(pid {running['pid']})", code="ServiceAlreadyRunning")
    argv = ["--state-dir", str(sdir)]
    for flag, value in (("--port", port), ("--host", host), ("--database-url", database_url),
                        ("--scheduler-host", scheduler_host)):
        if value is not None:
            argv += [flag, str(value)]
    if not detach:
        from hpcbatch.api import server

        click.get_current_context().exit(server.main(argv))
    sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = sdir / "service.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hpcbatch.api.server", *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    info: dict[str, Any] | None = None
    with Console(stderr=True).status(f"Starting the hpcbatch service (pid {proc.pid}) ..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            info = _service_info(sdir)
            if info and info.get("pid") == proc.pid and _healthy(str(info.get("endpoint"))):
                break
            info = None
            time.sleep(0.2)
    if info is None:
        if proc.poll() is None:
            proc.terminate()
            why = f"did not answer within {START_TIMEOUT_S:g} s"
        else:
            why = f"exited with status {proc.returncode}"
        click.echo(f"error: ServiceStartFailed: the service {why}; the end of {log_path}:\n"
                   f"{_log_tail(log_path)}", err=True)
        click.get_current_context().exit(1)
    assert info is not None
    emit({"endpoint": info["endpoint"], "account": info["account"],
          "key_file": info["key_file"], "pid": info["pid"], "state_dir": str(sdir)})


def _is_service_process(pid: int) -> bool:
    try:
        args = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    if pid == os.getpid():
        return False
    return "hpcbatch.api.server" in args or (
        any(Path(a).name == "hpcbatch" for a in args[:2]) and "service" in args)


@service.command("stop")
def service_stop() -> None:
    """Stop the service: SIGTERM, then SIGKILL after 60 s."""
    sdir = state().service_dir
    info = _running(sdir)
    if info is None:
        note(f"no hpcbatch service is running for {sdir}")
        return
    pid = info["pid"]
    if not _is_service_process(pid):
        raise HpcbatchError(f"pid {pid} of {sdir / 'service.json'} is not a standalone hpcbatch "
                            "service (an embedded LocalBatch?); stop it from its own program.",
                            code="ServiceNotStoppable")
    proc = psutil.Process(pid)
    with Console(stderr=True).status(f"Stopping the hpcbatch service (pid {pid}) ..."):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            note(f"pid {pid} still runs after {STOP_TIMEOUT_S:g} s; sending SIGKILL")
            proc.kill()
            proc.wait(10)
        except psutil.NoSuchProcess:
            pass
    if (_service_info(sdir) or {}).get("pid") == pid:
        (sdir / "service.json").unlink(missing_ok=True)
    note(f"stopped the hpcbatch service (pid {pid})")


@service.command("status")
@output_option
def service_status() -> None:
    """Show whether the service runs, its endpoint and pid (exit 1 when not running)."""
    sdir = state().service_dir
    info = _running(sdir) or {}
    up = bool(info) and _healthy(str(info.get("endpoint")))
    emit({"running": up, "endpoint": info.get("endpoint"), "account": info.get("account"),
          "pid": info.get("pid"), "state_dir": str(sdir)})
    if not up:
        click.get_current_context().exit(1)


# --------------------------------------------------------------------------- hosts


@cli.group()
def hosts() -> None:
    """Manage the host inventory (the machines pools take their nodes from)."""


@hosts.command("add")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Inventory YAML file (see hpcbatch.providers.inventory).")
@output_option
def hosts_add(file: str) -> None:
    """Add (or replace) the hosts of an inventory file."""
    from hpcbatch.providers.inventory import load_inventory

    emit(client().add_hosts([h.model_dump(mode="json") for h in load_inventory(file)]),
         HOST_COLUMNS)


@hosts.command("list")
@output_option
def hosts_list() -> None:
    """List the inventory, with the pool each host belongs to."""
    emit(client().list_hosts(), HOST_COLUMNS)


@hosts.command("remove")
@click.option("--name", required=True, help="Inventory name of the host.")
def hosts_remove(name: str) -> None:
    """Remove a host that belongs to no pool."""
    client().remove_host(name)
    note(f"removed host {name}")


# --------------------------------------------------------------------- applications

APPLICATION_COLUMNS: list[Column] = [
    ("Id", "id"), ("Display name", "displayName"), ("Versions", "versions"),
    ("Default version", "defaultVersion"),
]


def application_name_option(f: F) -> F:
    return click.option("--application-name", "application_name", required=True,
                        help="The application ID (case-insensitive).")(f)


@cli.group()
def application() -> None:
    """Manage application packages: zips that tasks reference by application and version.

    A task (or pool) with applicationPackageReferences finds a package extracted in
    $AZ_BATCH_APP_PACKAGE_{app}_{version} (lower case; characters other than letters
    and digits become _), and the default version in $AZ_BATCH_APP_PACKAGE_{app}.
    """


@application.group("package")
def application_package() -> None:
    """Upload and delete application package versions."""


@application_package.command("create")
@application_name_option
@click.option("--version", "version", required=True, help="The package version, e.g. 1.0.")
@click.option("--package-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The zip file to upload.")
def application_package_create(application_name: str, version: str, package_file: str) -> None:
    """Upload a zip as a version of an application (created if new).

    The first version of an application becomes its default.
    """
    client().create_application_package(application_name, version, package_file)
    note(f"uploaded {package_file} as {application_name} {version}")


@application_package.command("delete")
@application_name_option
@click.option("--version", "version", required=True, help="The package version.")
@yes_option
def application_package_delete(application_name: str, version: str, yes: bool) -> None:
    """Delete a version of an application package."""
    if not yes:
        click.confirm(f"Delete package {application_name} {version}?", abort=True, err=True)
    client().delete_application_package(application_name, version)
    note(f"deleted package {application_name} {version}")


@application.command("list")
@output_option
def application_list() -> None:
    """List applications with their versions ("Application - List")."""
    emit(client().list_applications(), APPLICATION_COLUMNS)


@application.command("show")
@application_name_option
@output_option
def application_show(application_name: str) -> None:
    """Show an application ("Application - Get")."""
    emit(client().get_application(application_name))


@application.command("set")
@application_name_option
@click.option("--default-version", required=True,
              help="Version used by references that name no version.")
def application_set(application_name: str, default_version: str) -> None:
    """Set an application's default version."""
    client().set_default_application_version(application_name, default_version)
    note(f"{application_name}: default version {default_version}")


# ---------------------------------------------------------------------------- pools


@cli.group()
def pool() -> None:
    """Manage pools of compute nodes."""


@pool.command("create")
@json_file_option("pool (PoolAddParameter)")
@click.option("--id", "pool_id", help="Pool ID.")
@click.option("--vm-size",
              help="Inventory label selecting hosts ('any': every host).  [default: any]")
@click.option("--target-dedicated-nodes", type=click.IntRange(min=0), help="Number of nodes.")
@click.option("--task-slots-per-node", type=click.IntRange(1, 256), help="Task slots per node.")
@click.option("--node-fill-type", type=click.Choice(["spread", "pack"]), help="Task placement.")
@click.option("--enable-inter-node-communication", is_flag=True, default=None,
              help="Allow multi-instance (MPI) tasks.")
@click.option("--start-task-command-line", help="Command line of the start task.")
@click.option("--start-task-wait-for-success", is_flag=True, default=None,
              help="Nodes are idle only after the start task succeeded.")
def pool_create(json_file: str | None, pool_id: str | None, vm_size: str | None,
                target_dedicated_nodes: int | None, task_slots_per_node: int | None,
                node_fill_type: str | None, enable_inter_node_communication: bool | None,
                start_task_command_line: str | None,
                start_task_wait_for_success: bool | None) -> None:
    """Create a pool from options or from a JSON file ("Pool - Add")."""
    exclusive_with_json(json_file, ["pool_id", "vm_size", "target_dedicated_nodes",
                                    "task_slots_per_node", "node_fill_type",
                                    "enable_inter_node_communication", "start_task_command_line",
                                    "start_task_wait_for_success"], ["pool_id"], locals())
    if start_task_wait_for_success and not start_task_command_line:
        raise click.UsageError("--start-task-wait-for-success needs --start-task-command-line.")
    if json_file:
        body = load_json(json_file)
    else:
        body = {"id": pool_id, "vmSize": vm_size or "any",
                "targetDedicatedNodes": target_dedicated_nodes,
                "taskSlotsPerNode": task_slots_per_node,
                "enableInterNodeCommunication": enable_inter_node_communication}
        if node_fill_type:
            body["taskSchedulingPolicy"] = {"nodeFillType": node_fill_type}
        if start_task_command_line:
            body["startTask"] = {"commandLine": start_task_command_line,
                                 "waitForSuccess": bool(start_task_wait_for_success)}
        body = {k: v for k, v in body.items() if v is not None}
    client().create_pool(body)
    note(f"created pool {body.get('id') if isinstance(body, dict) else ''}")


@pool.command("list")
@click.option("--filter", "filter_", help="OData $filter, e.g. \"state eq 'active'\".")
@output_option
def pool_list(filter_: str | None) -> None:
    """List pools."""
    emit(client().list_pools(filter_), POOL_COLUMNS)


@pool.command("show")
@pool_id_option
@output_option
def pool_show(pool_id: str) -> None:
    """Show a pool."""
    emit(client().get_pool(pool_id))


@pool.command("resize")
@pool_id_option
@click.option("--target-dedicated-nodes", type=click.IntRange(min=0), required=True,
              help="New number of nodes.")
@click.option("--node-deallocation-option",
              type=click.Choice(["requeue", "terminate", "taskcompletion", "retaineddata"]),
              help="What happens to tasks on removed nodes (default requeue).")
def pool_resize(pool_id: str, target_dedicated_nodes: int,
                node_deallocation_option: str | None) -> None:
    """Resize a pool ("Pool - Resize")."""
    client().resize_pool(pool_id, target_dedicated_nodes, node_deallocation_option)
    note(f"resizing pool {pool_id} to {target_dedicated_nodes} nodes")


@pool.command("delete")
@pool_id_option
@yes_option
def pool_delete(pool_id: str, yes: bool) -> None:
    """Delete a pool; its hosts go back to the inventory."""
    if not yes:
        click.confirm(f"Delete pool {pool_id}?", abort=True, err=True)
    client().delete_pool(pool_id)
    note(f"deleting pool {pool_id}")


@pool.command("wait")
@pool_id_option
@timeout_option(300.0)
@output_option
def pool_wait(pool_id: str, timeout_s: float) -> None:
    """Wait until a pool is steady and its nodes settled; print the nodes.

    Exit 1 when a node ended unusable or its start task failed, 2 on timeout.
    """
    with Console(stderr=True).status(f"Waiting for pool {pool_id} ..."):
        nodes = client().wait_for_pool(pool_id, timeout_s=timeout_s)
    emit(nodes, NODE_COLUMNS)
    if any(n.state in ("unusable", "starttaskfailed") for n in nodes):
        click.get_current_context().exit(1)


@pool.group("autoscale")
def pool_autoscale() -> None:
    """Enable, disable and try out a pool's autoscale formula."""


def formula_options(f: F) -> F:
    """``--formula F`` / ``--formula-file FILE``: the autoscale formula (exactly one of them)."""
    f = click.option("--formula-file", type=click.Path(dir_okay=False, allow_dash=True),
                     help="File holding the formula ('-': stdin).")(f)
    return click.option("--formula", help="The autoscale formula, e.g. "
                                          "'$TargetDedicatedNodes = 2;'.")(f)


def _formula(formula: str | None, formula_file: str | None) -> str:
    """The formula of ``--formula`` or ``--formula-file``; a usage error unless exactly one."""
    if (formula is None) == (formula_file is None):
        raise click.UsageError("give --formula or --formula-file (one of them).")
    if formula is not None:
        return formula
    assert formula_file is not None
    try:
        return sys.stdin.read() if formula_file == "-" else Path(formula_file).read_text(
            encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {formula_file}: {exc.strerror or exc}",
                                 param_hint="'--formula-file'") from None


def _autoscale_variables(results: str) -> list[dict[str, str]]:
    """``$a=1;$b=[1,2]`` (``autoScaleRun.results``) as ``[{name, value}, ...]``."""
    rows = []
    for item in re.split(r";(?=\$)", results.strip().rstrip(";")):
        if item:
            name, _, value = item.partition("=")
            rows.append({"name": name, "value": value})
    return rows


@pool_autoscale.command("enable")
@pool_id_option
@formula_options
@click.option("--evaluation-interval", callback=_parse_duration,
              help="ISO 8601 duration between evaluations, 5 min to 168 h (default PT15M).")
def pool_autoscale_enable(pool_id: str, formula: str | None, formula_file: str | None,
                          evaluation_interval: str | None) -> None:
    """Enable autoscale on a pool ("Pool - Enable Auto Scale"); it evaluates at once."""
    text = _formula(formula, formula_file)
    client().enable_pool_auto_scale(pool_id, text, evaluation_interval)
    note(f"enabled autoscale on pool {pool_id}")


@pool_autoscale.command("disable")
@pool_id_option
def pool_autoscale_disable(pool_id: str) -> None:
    """Disable autoscale on a pool ("Pool - Disable Auto Scale"); the target stays as is."""
    client().disable_pool_auto_scale(pool_id)
    note(f"disabled autoscale on pool {pool_id}")


@pool_autoscale.command("evaluate")
@pool_id_option
@formula_options
@output_option
def pool_autoscale_evaluate(pool_id: str, formula: str | None, formula_file: str | None) -> None:
    """Evaluate a formula on a pool without applying it ("Pool - Evaluate Auto Scale").

    Prints each variable's value (with --output json, the AutoScaleRun). The
    pool must have autoscale enabled. Exit 1 when the evaluation failed.
    """
    text = _formula(formula, formula_file)
    run_ = client().evaluate_pool_auto_scale(pool_id, text)
    run_.pop("odata.metadata", None)
    if state().output == "json":
        emit(run_)
    else:
        emit(_autoscale_variables(run_.get("results") or ""),
             [("Variable", "name"), ("Value", "value")])
    error = run_.get("error")
    if error:
        details = "; ".join(str(v.get("value")) for v in error.get("values") or [])
        click.echo(f"error: {error.get('code')}: {error.get('message')}"
                   + (f" ({details})" if details else ""), err=True)
        click.get_current_context().exit(1)


# ---------------------------------------------------------------------------- nodes


@cli.group()
def node() -> None:
    """Inspect and manage compute nodes."""


@node.command("list")
@pool_id_option
@output_option
def node_list(pool_id: str) -> None:
    """List a pool's compute nodes."""
    emit(client().list_nodes(pool_id), NODE_COLUMNS)


@node.command("show")
@pool_id_option
@node_id_option
@output_option
def node_show(pool_id: str, node_id: str) -> None:
    """Show a compute node."""
    emit(client().get_node(pool_id, node_id))


NODE_TASK_OPTIONS = ["requeue", "terminate", "taskcompletion", "retaineddata"]
"""What happens to a node's running tasks when it reboots, is reimaged or removed."""


def node_option(choices: Sequence[str], what: str) -> Callable[[F], F]:
    """``--option``: what happens to the node's running tasks (default requeue)."""
    return click.option("--option", "option", type=click.Choice(list(choices)),
                        help=f"What happens to the node's running tasks when it {what} "
                             "(default requeue).")


@node.command("reboot")
@pool_id_option
@node_id_option
@node_option(NODE_TASK_OPTIONS, "reboots")
def node_reboot(pool_id: str, node_id: str, option: str | None) -> None:
    """Reboot a compute node ("Compute Node - Reboot"); its start task runs again."""
    client().reboot_node(pool_id, node_id, option)
    note(f"rebooting node {node_id} of pool {pool_id}")


@node.command("reimage")
@pool_id_option
@node_id_option
@node_option(NODE_TASK_OPTIONS, "is reimaged")
def node_reimage(pool_id: str, node_id: str, option: str | None) -> None:
    """Reimage a compute node ("Compute Node - Reimage"): its root dir is wiped, then it reboots."""
    client().reimage_node(pool_id, node_id, option)
    note(f"reimaging node {node_id} of pool {pool_id}")


@node.command("disable-scheduling")
@pool_id_option
@node_id_option
@node_option(NODE_TASK_OPTIONS[:3], "stops taking tasks")
def node_disable_scheduling(pool_id: str, node_id: str, option: str | None) -> None:
    """Stop new tasks from starting on a node ("Compute Node - Disable Scheduling")."""
    client().disable_node_scheduling(pool_id, node_id, option)
    note(f"disabled scheduling on node {node_id} of pool {pool_id}")


@node.command("enable-scheduling")
@pool_id_option
@node_id_option
def node_enable_scheduling(pool_id: str, node_id: str) -> None:
    """Let a node take tasks again ("Compute Node - Enable Scheduling")."""
    client().enable_node_scheduling(pool_id, node_id)
    note(f"enabled scheduling on node {node_id} of pool {pool_id}")


@node.command("remove")
@pool_id_option
@click.option("--node-id", "node_ids", multiple=True, required=True,
              help="The compute node ID (repeatable).")
@node_option(NODE_TASK_OPTIONS, "leaves the pool")
def node_remove(pool_id: str, node_ids: tuple[str, ...], option: str | None) -> None:
    """Remove nodes from a pool ("Pool - Remove Nodes"); the pool's target drops with them."""
    client().remove_nodes(pool_id, list(node_ids), option)
    note(f"removing {len(node_ids)} node(s) from pool {pool_id}: {', '.join(node_ids)}")


@node.group("file")
def node_file() -> None:
    """List and download the files under a compute node's root directory."""


@node_file.command("list")
@pool_id_option
@node_id_option
@click.option("--recursive", is_flag=True, help="Include files of subdirectories.")
@output_option
def node_file_list(pool_id: str, node_id: str, recursive: bool) -> None:
    """List the files under a node's root directory ("File - List From Compute Node")."""
    emit(client().list_node_files(pool_id, node_id, recursive=recursive), FILE_COLUMNS)


@node_file.command("download")
@pool_id_option
@node_id_option
@click.option("--file-path", required=True,
              help="Path under the node's root, e.g. workitems/{job}/job-1/{task}/stdout.txt.")
@click.option("--destination", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Local file to write ('-': stdout).")
def node_file_download(pool_id: str, node_id: str, file_path: str, destination: str) -> None:
    """Download a file of a node ("File - Get From Compute Node"), e.g. a subtask's output."""
    _save(client().download_node_file(pool_id, node_id, file_path), destination)


def _save(data: bytes, destination: str) -> None:
    """Write downloaded bytes to ``destination`` (``-``: stdout)."""
    if destination == "-":
        click.get_binary_stream("stdout").write(data)
        click.get_binary_stream("stdout").flush()
    else:
        Path(destination).write_bytes(data)
        note(f"wrote {len(data)} bytes to {destination}")


# ----------------------------------------------------------------------------- jobs


@cli.group()
def job() -> None:
    """Manage jobs."""


@job.command("create")
@json_file_option("job (JobAddParameter)")
@click.option("--id", "job_id", help="Job ID.")
@click.option("--pool-id", help="Pool the job's tasks run on.")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Priority, -1000 to 1000.")
def job_create(json_file: str | None, job_id: str | None, pool_id: str | None,
               priority: int | None) -> None:
    """Create a job from options or from a JSON file ("Job - Add")."""
    exclusive_with_json(json_file, ["job_id", "pool_id", "priority"], ["job_id", "pool_id"],
                        locals())
    body = load_json(json_file) if json_file else {
        k: v for k, v in {"id": job_id, "poolInfo": {"poolId": pool_id},
                          "priority": priority}.items() if v is not None}
    client().create_job(body)
    note(f"created job {body.get('id') if isinstance(body, dict) else ''}")


@job.command("list")
@click.option("--filter", "filter_", help="OData $filter, e.g. \"state eq 'active'\".")
@output_option
def job_list(filter_: str | None) -> None:
    """List jobs."""
    emit(client().list_jobs(filter_), JOB_COLUMNS)


@job.command("show")
@job_id_option
@output_option
def job_show(job_id: str) -> None:
    """Show a job."""
    emit(client().get_job(job_id))


@job.command("terminate")
@job_id_option
@click.option("--reason", help="Terminate reason recorded on the job.")
def job_terminate(job_id: str, reason: str | None) -> None:
    """Terminate a job: its active and running tasks are terminated."""
    client().terminate_job(job_id, reason)
    note(f"terminating job {job_id}")


@job.command("delete")
@job_id_option
@yes_option
def job_delete(job_id: str, yes: bool) -> None:
    """Delete a job and its tasks."""
    if not yes:
        click.confirm(f"Delete job {job_id} and its tasks?", abort=True, err=True)
    client().delete_job(job_id)
    note(f"deleting job {job_id}")


@job.command("task-counts")
@job_id_option
@output_option
def job_task_counts(job_id: str) -> None:
    """Show a job's task counts (active, running, completed, succeeded, failed)."""
    emit(client().get_task_counts(job_id))


@job.command("disable")
@job_id_option
@click.option("--disable-tasks", type=click.Choice(["requeue", "terminate", "wait"]),
              default="requeue", show_default=True,
              help="What happens to the job's running tasks: requeue them, terminate them, "
                   "or let them finish.")
def job_disable(job_id: str, disable_tasks: str) -> None:
    """Disable a job ("Job - Disable"): no new task of it starts until it is enabled."""
    client().disable_job(job_id, disable_tasks)
    note(f"disabling job {job_id}")


@job.command("enable")
@job_id_option
def job_enable(job_id: str) -> None:
    """Enable a disabled job ("Job - Enable")."""
    client().enable_job(job_id)
    note(f"enabled job {job_id}")


PREP_RELEASE_COLUMNS: list[Column] = [  # two-line headers: eight columns in 80 characters
    ("Pool", "poolId"), ("Node", "nodeId"),
    ("Prep\nstate", "jobPreparationTaskExecutionInfo.state"),
    ("Prep\nresult", "jobPreparationTaskExecutionInfo.result"),
    ("Prep\nexit", "jobPreparationTaskExecutionInfo.exitCode"),
    ("Release\nstate", "jobReleaseTaskExecutionInfo.state"),
    ("Release\nresult", "jobReleaseTaskExecutionInfo.result"),
    ("Release\nexit", "jobReleaseTaskExecutionInfo.exitCode"),
]


@job.command("prep-release-status")
@job_id_option
@output_option
def job_prep_release_status(job_id: str) -> None:
    """Show, per node, the job preparation and release tasks' status
    ("Job - List Preparation and Release Task Status")."""
    emit(client().list_job_preparation_and_release_task_status(job_id), PREP_RELEASE_COLUMNS)


# ---------------------------------------------------------------------------- tasks


@cli.group()
def task() -> None:
    """Manage tasks and their files."""


@task.command("create")
@job_id_option
@json_file_option("task, or a list of tasks (TaskAddParameter)")
@click.option("--task-id", help="Task ID.")
@click.option("--command-line", help="Command line (not run under a shell unless it invokes one).")
@click.option("--max-wall-clock-time", callback=_parse_duration,
              help="ISO 8601 duration, e.g. PT1H.")
@click.option("--max-task-retry-count", type=click.IntRange(min=-1),
              help="Retries after a failure (-1: unlimited).")
@click.option("--env", "env", multiple=True, callback=_parse_env, metavar="NAME=VALUE",
              help="Environment variable (repeatable).")
@output_option
def task_create(job_id: str, json_file: str | None, task_id: str | None,
                command_line: str | None, max_wall_clock_time: str | None,
                max_task_retry_count: int | None, env: list[dict[str, str]]) -> None:
    """Add one task, or every task of a JSON file ("Task - Add", "Task - Add Collection").

    A JSON list (or {"value": [...]}) is sent 100 tasks per request; the command
    exits 1 when any task was rejected.
    """
    exclusive_with_json(json_file, ["task_id", "command_line", "max_wall_clock_time",
                                    "max_task_retry_count", "env"],
                        ["task_id", "command_line"], locals())
    if json_file:
        body = load_json(json_file)
        if isinstance(body, dict) and isinstance(body.get("value"), list):
            body = body["value"]
    else:
        constraints = {k: v for k, v in {"maxWallClockTime": max_wall_clock_time,
                                         "maxTaskRetryCount": max_task_retry_count}.items()
                       if v is not None}
        body = {"id": task_id, "commandLine": command_line,
                **({"environmentSettings": env} if env else {}),
                **({"constraints": constraints} if constraints else {})}
    if not isinstance(body, list):
        client().create_task(job_id, body)
        note(f"added task {body.get('id') if isinstance(body, dict) else ''} to job {job_id}")
        return
    results = client().create_tasks(job_id, body, raise_on_error=False)
    bad = [r for r in results if r.status != "success"]
    if state().output == "json":
        emit(results)
    for r in bad:
        err = r.error or {}
        click.echo(f"error: {err.get('code', r.status)}: task {r.task_id}: "
                   f"{(err.get('message') or {}).get('value', '')}", err=True)
    note(f"added {len(results) - len(bad)} of {len(results)} tasks to job {job_id}")
    if bad:
        click.get_current_context().exit(1)


@task.command("list")
@job_id_option
@click.option("--filter", "filter_", help="OData $filter, e.g. \"state eq 'completed'\".")
@click.option("--select", help="OData $select: comma-separated properties, e.g. id,state.")
@output_option
def task_list(job_id: str, filter_: str | None, select: str | None) -> None:
    """List a job's tasks."""
    tasks = client().list_tasks(job_id, filter=filter_, select=select)
    columns = ([(name.strip(), name.strip()) for name in select.split(",")] if select
               else TASK_COLUMNS)
    emit(tasks, columns, partial=bool(select))


@task.command("show")
@job_id_option
@task_id_option
@click.option("--select", help="OData $select: comma-separated properties.")
@output_option
def task_show(job_id: str, task_id: str, select: str | None) -> None:
    """Show a task."""
    emit(client().get_task(job_id, task_id, select=select), partial=bool(select))


@task.command("terminate")
@job_id_option
@task_id_option
def task_terminate(job_id: str, task_id: str) -> None:
    """Terminate a task."""
    client().terminate_task(job_id, task_id)
    note(f"terminated task {task_id}")


@task.command("delete")
@job_id_option
@task_id_option
@yes_option
def task_delete(job_id: str, task_id: str, yes: bool) -> None:
    """Delete a task and its files."""
    if not yes:
        click.confirm(f"Delete task {task_id} of job {job_id}?", abort=True, err=True)
    client().delete_task(job_id, task_id)
    note(f"deleted task {task_id}")


@task.command("reactivate")
@job_id_option
@task_id_option
def task_reactivate(job_id: str, task_id: str) -> None:
    """Reactivate a failed task ("Task - Reactivate"): it runs again, with its retries reset."""
    client().reactivate_task(job_id, task_id)
    note(f"reactivated task {task_id}")


@task.command("wait")
@job_id_option
@timeout_option(3600.0)
@output_option
def task_wait(job_id: str, timeout_s: float) -> None:
    """Wait until every task of a job completed, with a progress bar.

    Exit 1 when any task failed, 2 on timeout.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    as_json = state().output == "json"
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(),
                  TextColumn("[green]{task.fields[succeeded]} succeeded[/] "
                             "[red]{task.fields[failed]} failed[/]"),
                  TimeElapsedColumn(), console=Console(stderr=True), disable=as_json) as bar:
        progress_id = bar.add_task(f"job {job_id}", total=None, succeeded=0, failed=0)

        def update(counts: dict[str, int]) -> None:
            total = sum(counts.get(k, 0) for k in ("active", "running", "completed"))
            bar.update(progress_id, total=total, completed=counts.get("completed", 0),
                       succeeded=counts.get("succeeded", 0), failed=counts.get("failed", 0))

        counts = client().wait_for_tasks(job_id, timeout_s=timeout_s, progress=update)
    if as_json:
        emit(counts)
    else:
        click.echo(f"job {job_id}: {counts.get('completed', 0)} tasks completed, "
                   f"{counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed")
    if counts.get("failed"):
        click.get_current_context().exit(1)


@task.group("file")
def task_file() -> None:
    """List and download the files of a task's directory."""


@task_file.command("list")
@job_id_option
@task_id_option
@click.option("--recursive", is_flag=True, help="Include files of subdirectories (wd/...).")
@output_option
def task_file_list(job_id: str, task_id: str, recursive: bool) -> None:
    """List a task's files."""
    emit(client().list_task_files(job_id, task_id, recursive=recursive), FILE_COLUMNS)


@task_file.command("download")
@job_id_option
@task_id_option
@click.option("--file-path", required=True, help="Path in the task dir, e.g. stdout.txt.")
@click.option("--destination", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Local file to write ('-': stdout).")
def task_file_download(job_id: str, task_id: str, file_path: str, destination: str) -> None:
    """Download a file of a task's directory."""
    data = client().download_task_file(job_id, task_id, file_path)
    if destination == "-":
        click.get_binary_stream("stdout").write(data)
        click.get_binary_stream("stdout").flush()
    else:
        Path(destination).write_bytes(data)
        note(f"wrote {len(data)} bytes to {destination}")


SUBTASK_COLUMNS: list[Column] = [
    ("Id", "id"), ("Node", "nodeInfo.nodeId"), ("State", "state"), ("Exit code", "exitCode"),
    ("Start", "startTime"), ("End", "endTime"),
]


@task.group("subtask")
def task_subtask() -> None:
    """Inspect the subtasks (instances 1..N-1) of a multi-instance task."""


@task_subtask.command("list")
@job_id_option
@task_id_option
@output_option
def task_subtask_list(job_id: str, task_id: str) -> None:
    """List a multi-instance task's subtasks ("Task - List Subtasks").

    A subtask's files are on its node: see ``hpcbatch node file download``.
    """
    emit(client().list_subtasks(job_id, task_id), SUBTASK_COLUMNS)


# -------------------------------------------------------------------------- outputs


@cli.group("output")
def output_group() -> None:
    """List and download job and task outputs saved by the Batch File Conventions.

    Outputs are read straight from storage (the service need not run): the URL
    of --storage-url, else $HPCBATCH_STORAGE_URL, else the storage of the
    state dir's service (its service.json). Azure storage (az://) takes its
    credentials from $AZURE_STORAGE_CONNECTION_STRING.
    """


def storage_url_option(f: F) -> F:
    return click.option("--storage-url", envvar="HPCBATCH_STORAGE_URL", show_envvar=True,
                        help="Storage holding the outputs (file:///path, az://, s3://; "
                             "default: the state dir's service's storage).")(f)


def output_target_options(f: F) -> F:
    """``--job-id`` and ``--task-id``: whose outputs."""
    f = click.option("--task-id", help="The task whose outputs to read (without it: the "
                                       "job's own outputs).")(f)
    return job_id_option(f)


def _output_storage(storage_url: str | None, job_id: str, task_id: str | None) -> Any:
    """The job's or task's output storage (``JobOutputStorage`` / ``TaskOutputStorage``)."""
    from hpcbatch.storage.conventions import JobOutputStorage, TaskOutputStorage
    from hpcbatch.storage.fs import open_storage

    if not storage_url:
        sdir = state().service_dir
        storage_url = (_service_info(sdir) or {}).get("storage_url")
        if not storage_url:
            raise HpcbatchError(
                f"no storage to read outputs from: give --storage-url or set "
                f"HPCBATCH_STORAGE_URL (no service.json naming one in {sdir})",
                code="StorageNotConfigured")
    storage = open_storage(storage_url)
    if task_id is None:
        return JobOutputStorage(storage, job_id)
    return TaskOutputStorage(storage, job_id, task_id)


def _output_kind(task_id: str | None, kind: str) -> Any:
    """``kind`` as a TaskOutputKind (with --task-id) or a JobOutputKind; a usage error if bad."""
    from hpcbatch.storage.conventions import JobOutputKind, TaskOutputKind
    from hpcbatch.storage.fs import StorageKeyError

    try:
        return (TaskOutputKind if task_id is not None else JobOutputKind)(kind)
    except StorageKeyError as exc:
        raise click.BadParameter(exc.message, param_hint="'--kind'") from None


def _standard_kinds(task_id: str | None) -> list[Any]:
    from hpcbatch.storage.conventions import JobOutputKind, TaskOutputKind

    if task_id is not None:
        return [TaskOutputKind.TaskOutput, TaskOutputKind.TaskPreview, TaskOutputKind.TaskLog,
                TaskOutputKind.TaskIntermediate]
    return [JobOutputKind.JobOutput, JobOutputKind.JobPreview]


OUTPUT_COLUMNS: list[Column] = [
    ("Path", "path"), ("Size (bytes)", "sizeBytes"), ("Last modified", "lastModified"),
]


@output_group.command("list")
@output_target_options
@click.option("--kind", help="Output kind: TaskOutput, TaskPreview, TaskLog, TaskIntermediate "
                             "(with --task-id), JobOutput, JobPreview, or a custom kind. "
                             "Default: every standard kind.")
@storage_url_option
@output_option
def output_list(job_id: str, task_id: str | None, kind: str | None,
                storage_url: str | None) -> None:
    """List a task's outputs (with --task-id) or a job's outputs."""
    outputs = _output_storage(storage_url, job_id, task_id)
    kinds = [_output_kind(task_id, kind)] if kind else _standard_kinds(task_id)
    rows = [{"kind": k.text, "path": f.path, "sizeBytes": f.size_bytes,
             "lastModified": (f.last_modified.astimezone(timezone.utc).isoformat()
                              .replace("+00:00", "Z") if f.last_modified else None),
             "url": f.url}
            for k in kinds for f in outputs.list_outputs(k)]
    emit(rows, OUTPUT_COLUMNS if kind else [("Kind", "kind"), *OUTPUT_COLUMNS])


@output_group.command("download")
@output_target_options
@click.option("--kind", required=True, help="Output kind, e.g. TaskOutput, TaskLog, JobOutput.")
@click.option("--path", "path", required=True,
              help="The output's path under its kind, e.g. stdout.txt.")
@click.option("--destination", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Local file to write ('-': stdout).")
@storage_url_option
def output_download(job_id: str, task_id: str | None, kind: str, path: str, destination: str,
                    storage_url: str | None) -> None:
    """Download one output of a task (with --task-id) or of a job."""
    outputs = _output_storage(storage_url, job_id, task_id)
    kind_ = _output_kind(task_id, kind)
    if destination == "-":
        _save(outputs.get_bytes(kind_, path), destination)
    else:
        outputs.download(kind_, path, destination)
        note(f"wrote {os.path.getsize(destination)} bytes to {destination}")


# ------------------------------------------------------------------------------ mpi

MPI_POLL_INTERVAL_S = 0.5
"""Seconds between two looks at the task (and its stdout.txt) in ``mpi run``."""


@cli.group()
def mpi() -> None:
    """Run MPI programs as multi-instance tasks."""


def _read_task_file_from(job_id: str, task_id: str, file_path: str, offset: int) -> bytes | None:
    """Bytes of a task's file from ``offset`` on ("File - Get From Task" with ``ocp-range``).

    Returns None when the file is not there (yet): the task has not reached a
    node, has not written it, or its node is gone.
    """
    path = (f"/jobs/{quote(job_id, safe='')}/tasks/{quote(task_id, safe='')}/files/"
            f"{quote(file_path, safe='/')}")
    try:
        return client()._request("GET", path, headers={"ocp-range": f"bytes={offset}-"}).content
    except BatchError as exc:
        if exc.code in ("FileNotFound", "OperationInvalidForCurrentState", "NodeNotFound"):
            return None
        raise


def _ensure_job(job_id: str, pool_id: str) -> bool:
    """Create job ``job_id`` on ``pool_id``, or check that the existing one is active there.

    Returns True when the job was created.
    """
    c = client()
    try:
        job = c.get_job(job_id)
    except BatchError as exc:
        if exc.code != "JobNotFound":
            raise
        try:
            c.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
            note(f"created job {job_id}")
            return True
        except BatchError as exc2:
            if exc2.code != "JobExists":
                raise
        job = c.get_job(job_id)
    if job.state != "active":
        state_ = getattr(job.state, "value", job.state)
        raise HpcbatchError(f"job {job_id} is {state_}, not active; give another --job-id "
                            "(or none)", code="JobNotActive", values={"JobId": job_id})
    job_pool = job.pool_info.pool_id if job.pool_info else None
    if job_pool != pool_id:
        raise HpcbatchError(f"job {job_id} runs on pool {job_pool}, not {pool_id}",
                            code="JobPoolMismatch", values={"JobId": job_id})
    return False


def _exit_status(code: int | None, failed: bool) -> int:
    """Process exit status for a task's exit code (1 when it has none, or failed with 0)."""
    if code is None or (failed and code == 0):
        return 1
    return code if 0 <= code <= 255 else 1


@mpi.command("run", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@pool_id_option
@click.option("--nodes", type=click.IntRange(min=1), required=True,
              help="Nodes to run on (the task's numberOfInstances).")
@click.option("--ppn", type=click.IntRange(min=1), default=1, show_default=True,
              help="MPI processes (ranks) per node.")
@click.option("--mpi", "flavor", type=click.Choice(FLAVORS), default="mpich", show_default=True,
              help="MPI implementation: mpich (mpiexec), openmpi (mpirun), "
                   "intelmpi (mpiexec.hydra).")
@click.option("--job-id", help="Job to add the task to (created when missing; reused when "
                               "active on the pool).  [default: mpi-<timestamp>]")
@click.option("--task-id", help="Task ID.  [default: mpi-<timestamp>]")
@click.option("--timeout-s", type=click.FloatRange(min=0), default=None,
              help="Terminate the task and exit 2 when it has not completed after this "
                   "many seconds (default: wait).")
@click.option("--coordination-command-line",
              help="Command every node runs before the MPI program starts (e.g. a daemon).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@output_option
def mpi_run(pool_id: str, nodes: int, ppn: int, flavor: str, job_id: str | None,
            task_id: str | None, timeout_s: float | None,
            coordination_command_line: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND as an MPI job of NODES x PPN ranks, like ``srun -N``; stream its output.

    Adds a multi-instance task whose primary runs ``mpiexec -hosts
    $AZ_BATCH_HOST_LIST -ppn PPN -n NODES*PPN COMMAND`` (each word of COMMAND
    passed as is), waits for it, prints its stdout as it grows (its stderr at
    the end when it failed) and exits with its exit code. Ctrl-C terminates the
    task. With --output json, prints the task at the end instead.

    \b
    Example:
        hpcbatch mpi run --pool-id p --nodes 2 --ppn 4 -- ./app --steps 10
    """
    c = client()
    stamp = datetime.now(timezone.utc)
    job_id = job_id or f"mpi-{stamp:%Y%m%d-%H%M%S}"
    task_id = task_id or f"mpi-{stamp:%Y%m%d-%H%M%S-%f}"
    as_json = state().output == "json"
    try:
        command_line = batch_command_line(list(command), nodes, ppn=ppn,
                                          flavor=flavor)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings: dict[str, Any] = {"numberOfInstances": nodes}
    if coordination_command_line:
        settings["coordinationCommandLine"] = coordination_command_line
    created = _ensure_job(job_id, pool_id)
    try:
        c.create_task(job_id, {"id": task_id, "commandLine": command_line,
                               "multiInstanceSettings": settings})
    except HpcbatchError:
        if created:
            c.delete_job(job_id)
        raise
    note(f"added task {task_id} to job {job_id}: {nodes} node(s) x {ppn} rank(s), {flavor}")

    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            c.terminate_task(job_id, task_id)
            raise TimeoutError(f"task {task_id} of job {job_id} did not complete within "
                               f"{timeout_s:g} s; terminated it")

    out = click.get_binary_stream("stdout")
    try:
        status = nullcontext() if as_json else Console(stderr=True).status(
            f"task {task_id}: active")
        with status as spinner:
            while True:
                task_ = c.get_task(job_id, task_id)
                if task_.state in ("running", "completed"):
                    break
                if spinner is not None:
                    spinner.update(f"task {task_id}: {getattr(task_.state, 'value', task_.state)} "
                                   f"(waiting for {nodes} node(s) of pool {pool_id})")
                check_deadline()
                time.sleep(MPI_POLL_INTERVAL_S)
        offset, retries = 0, 0
        while True:
            task_ = c.get_task(job_id, task_id)
            info = task_.execution_info
            if info is not None and info.retry_count != retries:
                retries, offset = info.retry_count, 0
                note(f"task {task_id}: retry {retries}")
            if not as_json and task_.state in ("running", "completed"):
                data = _read_task_file_from(job_id, task_id, "stdout.txt", offset)
                if data:
                    out.write(data)
                    out.flush()
                    offset += len(data)
            if task_.state == "completed":
                break
            check_deadline()
            time.sleep(MPI_POLL_INTERVAL_S)
    except KeyboardInterrupt:
        c.terminate_task(job_id, task_id)
        note(f"interrupted: terminated task {task_id} of job {job_id}")
        click.get_current_context().exit(130)

    info = task_.execution_info
    code = info.exit_code if info else None
    failure = info.failure_info if info else None
    failed = failure is not None or code != 0
    if as_json:
        emit(task_)
    if failed:
        err = _read_task_file_from(job_id, task_id, "stderr.txt", 0)
        if err:
            click.get_binary_stream("stderr").write(err)
            click.get_binary_stream("stderr").flush()
    if failure is not None:
        click.echo(f"error: {failure.code}: {failure.message}", err=True)
    click.get_current_context().exit(_exit_status(code, failed))


# ------------------------------------------------------------ quickstart & testbed


def _optional_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise HpcbatchError(f"{name} is not available in this installation",
                            code="NotAvailable") from None


@cli.command()
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Local compute nodes to start.")
def quickstart(nodes: int) -> None:
    """Run the quickstart: a local service, a pool, a job and tasks, end to end."""
    code = _optional_module("hpcbatch.client.quickstart").main(nodes=nodes)
    click.get_current_context().exit(int(code or 0))


@cli.group()
def testbed() -> None:
    """Run an SSH testbed: real sshd daemons on loopback addresses."""


@testbed.command("up")
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Number of sshd nodes.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for keys, configs, logs and node root dirs.")
@click.option("--base-address", default="127.0.1.1", show_default=True,
              help="Address of the first node; the others increment its last octet.")
@output_option
def testbed_up(nodes: int, directory: Path, base_address: str) -> None:
    """Start a testbed and print its inventory and ssh_config paths."""
    tb = _optional_module("hpcbatch.testing.testbed").up(nodes, directory, base_address=base_address)
    emit({"inventory": str(tb.inventory_path), "ssh_config": str(tb.ssh_config_path),
          "hosts": [h.name for h in tb.hosts]})
    if state().output != "json":
        note(f"add the nodes to a service with: hpcbatch hosts add --file {tb.inventory_path}")


@testbed.command("down")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="The testbed folder.")
def testbed_down(directory: Path) -> None:
    """Stop the testbed's sshd daemons."""
    _optional_module("hpcbatch.testing.testbed").down(directory)
    note(f"stopped the testbed in {directory}")


@cli.group("init")
def init() -> None:
    """Copy a starter project of Batch's Job Manager or Task Processor template."""


def _init_command(name: str, what: str) -> None:
    @init.command(name, help=f"Copy the {what} template (main.py, parameters.json, README.md) "
                             "into DIRECTORY (created if missing).")
    @click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace files that already exist.")
    def command(directory: Path, force: bool) -> None:
        from hpcbatch.templates import copy_template

        for path in copy_template(name, directory, overwrite=force):
            click.echo(str(path))
        note(f"{what} template copied to {directory}; see its README.md")


_init_command("job-manager", "Job Manager (job splitter)")
_init_command("task-processor", "Task Processor")


def main() -> None:
    """Run the ``hpcbatch`` command line."""
    cli.main(prog_name="hpcbatch")




# ------------------------------------------------------------------ job schedules

SCHEDULE_COLUMNS: list[Column] = [
    ("id", "id"), ("state", "state"),
    ("next run", "executionInfo.nextRunTime"), ("recent job", "executionInfo.recentJob.id"),
]


@cli.group("job-schedule")
def job_schedule() -> None:
    """Job schedules: jobs created on a recurrence ("Schedule jobs")."""


schedule_id_option = click.option("--job-schedule-id", "job_schedule_id", required=True,
                                  help="The job schedule ID.")


@job_schedule.command("create")
@click.option("--json-file", required=True, type=click.Path(allow_dash=True),
              help="JobScheduleAddParameter JSON: id, schedule, jobSpecification.")
def job_schedule_create(json_file: str) -> None:
    """Add a job schedule."""
    body = load_json(json_file)
    client().create_job_schedule(body)
    note(f"created job schedule {body.get('id') if isinstance(body, dict) else ''}")


@job_schedule.command("list")
@output_option
def job_schedule_list() -> None:
    """List job schedules."""
    emit(client().list_job_schedules(), SCHEDULE_COLUMNS)


@job_schedule.command("show")
@schedule_id_option
@output_option
def job_schedule_show(job_schedule_id: str) -> None:
    """Show a job schedule."""
    emit(client().get_job_schedule(job_schedule_id))


@job_schedule.command("jobs")
@schedule_id_option
@output_option
def job_schedule_jobs(job_schedule_id: str) -> None:
    """List the jobs a schedule created."""
    emit(client().list_jobs_from_schedule(job_schedule_id), JOB_COLUMNS)


def _schedule_action(name: str, method: str, doc: str) -> None:
    @job_schedule.command(name, help=doc)
    @schedule_id_option
    def command(job_schedule_id: str) -> None:
        getattr(client(), method)(job_schedule_id)
        note(f"{name}: job schedule {job_schedule_id}")


for _name, _method, _doc in (("enable", "enable_job_schedule", "Enable a job schedule."),
                             ("disable", "disable_job_schedule", "Disable a job schedule."),
                             ("terminate", "terminate_job_schedule",
                              "Terminate a job schedule and its active job."),
                             ("delete", "delete_job_schedule",
                              "Delete a job schedule and its jobs.")):
    _schedule_action(_name, _method, _doc)


# ------------------------------------------------------------------------ events


@cli.group()
def events() -> None:
    """Diagnostic events (PoolCreateEvent, TaskStartEvent, TaskFailEvent, ...)."""


@events.command("tail")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they come.")
@click.option("--lines", "-n", default=20, show_default=True, help="Events to show first.")
@click.option("--name", "names", multiple=True, help="Only events of this name (repeatable).")
@output_option
def events_tail(follow: bool, lines: int, names: tuple[str, ...]) -> None:
    """Show the service's latest diagnostic events (from the state dir's events.jsonl)."""
    from hpcbatch.store.events import EventLog

    path = state().service_dir / "events.jsonl"
    if not path.exists():
        raise HpcbatchError(f"no events yet: {path} does not exist", code="NoEvents")
    log = EventLog(path)
    as_json = state().output == "json"

    def show(event: dict[str, Any]) -> None:
        if names and event.get("name") not in names:
            return
        if as_json:
            click.echo(json.dumps(event))
        else:
            body = event.get("body", {})
            what = " ".join(f"{k}={body[k]}" for k in ("poolId", "jobId", "id") if k in body)
            click.echo(f"{event.get('time')}  {event.get('name'):<24} {what}")

    recent = [e for e in log.read() if not names or e.get("name") in names][-lines:]
    for event in recent:
        show(event)
    if follow:
        try:
            for event in log.follow():
                show(event)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
