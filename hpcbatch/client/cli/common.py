"""What every command group of the ``hpcbatch`` command line shares.

The context (:class:`State`: state dir, output format, the client), output
(:func:`emit` a table or Batch's JSON, :func:`note` to stderr, :func:`save`
downloaded bytes, :func:`status` spinners), option helpers (``-o``, ID options,
:func:`request_body`: ``--json-file`` or per-property options, durations,
``NAME=VALUE``) and the command shapes the groups repeat: :func:`read_command`
(print what the service returns: list or show), :func:`action_command` (do one
thing, optionally after confirmation, and say so) and :func:`download_command`.

Only ``click`` is imported here; ``rich`` is imported when a table or spinner
is shown, the SDK when a command first needs the client, ``pydantic`` only to
parse an ISO 8601 duration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hpcbatch.batch.errors import HpcbatchError

if TYPE_CHECKING:
    from hpcbatch.client.sdk import BatchClient

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
Column = tuple[str, "str | Callable[[dict[str, Any]], Any]"]
"""A table column: ``(header, wire path such as "executionInfo.exitCode", or a function
of the wire dict)``."""


# ----------------------------------------------------------------------- context


@dataclass
class State:
    """What the root group's options decide, shared by every command (``ctx.obj``)."""

    state_dir: Path | None = None
    output: str = "table"
    _client: BatchClient | None = None

    @property
    def service_dir(self) -> Path:
        """The state dir: ``--state-dir``, else ``$HPCBATCH_STATE_DIR``, else ``~/.hpcbatch``."""
        from hpcbatch.client.state import state_dir_path

        return state_dir_path(self.state_dir).resolve()

    @property
    def client(self) -> BatchClient:
        """The client of the service (created on first use)."""
        if self._client is None:
            from hpcbatch.client.sdk import BatchClient

            self._client = BatchClient.from_environment(self.state_dir)
            click.get_current_context().call_on_close(self._client.close)
        return self._client


def state() -> State:
    """The :class:`State` of the command being run."""
    return click.get_current_context().ensure_object(State)


def client() -> BatchClient:
    """The client of the service the command talks to."""
    return state().client


def as_json() -> bool:
    """Whether the command prints JSON (``-o json``)."""
    return state().output == "json"


# ------------------------------------------------------------------------ output


def _wire(obj: Any) -> Any:
    """Batch wire JSON of a model (anything with ``model_dump``), else ``obj``."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
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


def emit(data: Any, columns: Sequence[Column] = ()) -> None:
    """Print wire JSON (or models), a dict or a list of them, as the chosen ``--output``.

    A table goes to a terminal drawn by rich; to a pipe or a file (``| grep``,
    ``| awk``) as plain columns, one line a row under a header line and no
    border, as ``squeue`` and ``ls`` print (and without importing rich).

    Parameters
    ----------
    data
        One object (printed as a property/value table) or a list (one row each).
    columns
        ``(header, wire path or function of the wire dict)`` per table column;
        ignored for single objects and for JSON.
    """
    wire = [_wire(o) for o in data] if isinstance(data, list) else _wire(data)
    if as_json():
        click.echo(json.dumps(wire, indent=2))
        return
    if isinstance(wire, list):
        headers = [header for header, _ in columns]
        rows = [[_cell(get(row) if callable(get) else _get(row, get)) for _, get in columns]
                for row in wire]
    else:
        headers = ["Property", "Value"]
        rows = [[key, _cell(value)] for key, value in _flatten(wire)]
    if not sys.stdout.isatty():
        click.echo(plain_table(headers, rows), nl=False)
        return
    from rich.console import Console
    from rich.table import Column as RichColumn
    from rich.table import Table
    from rich.text import Text

    table = Table(*headers[:-1], RichColumn(headers[-1], overflow="fold"), header_style="bold")
    for cells in rows:
        table.add_row(*(Text(c) for c in cells))  # Text: a "[...]" in a value is not markup
    Console(soft_wrap=False).print(table)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return ``rows`` under ``headers`` as left-aligned columns two spaces apart.

    One line a row (a header's or a value's line breaks become spaces); the
    last column is not padded. An empty ``rows`` gives the header line alone.
    """
    lines = [[" ".join(c.splitlines()) for c in r] for r in (headers, *rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers) - 1)]
    return "".join(
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]])
        .rstrip() + "\n" for line in lines)


def note(message: str) -> None:
    """Tell people what happened (stderr, so stdout stays machine-readable)."""
    click.echo(message, err=True)


def save(data: bytes, destination: str) -> None:
    """Write downloaded bytes to ``destination`` (``-``: stdout; its missing folders are
    made, as ``output download`` does) and say so."""
    if destination == "-":
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
    else:
        path = Path(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        note(f"wrote {len(data)} bytes to {destination}")


@contextmanager
def status(message: str, *, enabled: bool = True) -> Iterator[Any]:
    """A spinner with ``message`` on stderr while the block runs; yields it (None when disabled).

    The spinner's ``update(text)`` changes the message.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status(message) as spinner:
        yield spinner


def first_error(node: dict[str, Any]) -> str:
    """``code: message`` of a compute node's first error, or ``""``."""
    errors = node.get("errors") or []
    return f"{errors[0].get('code')}: {errors[0].get('message')}" if errors else ""


NODE_COLUMNS: list[Column] = [
    ("Id", "id"), ("State", "state"), ("IP address", "ipAddress"),
    ("Running tasks", "runningTasksCount"), ("Errors", first_error),
]
JOB_COLUMNS: list[Column] = [
    ("Id", "id"), ("Pool", "poolInfo.poolId"), ("State", "state"),
    ("Priority", lambda j: j.get("priority", 0)),
]
NODE_DEALLOCATION_OPTIONS = ["requeue", "terminate", "taskcompletion", "retaineddata"]
"""What happens to a node's running tasks when it reboots, is reimaged or leaves its pool."""

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


def id_option(flag: str, help: str) -> Decorator:  # `help`: click's word (shadows the builtin here only)
    """A required ID option, e.g. ``id_option("--pool-id", "The pool ID.")`` (parameter ``pool_id``)."""
    return click.option(flag, flag.lstrip("-").replace("-", "_"), required=True, help=help)


pool_id_option = id_option("--pool-id", "The pool ID.")
job_id_option = id_option("--job-id", "The job ID.")
task_id_option = id_option("--task-id", "The task ID.")
node_id_option = id_option("--node-id", "The compute node ID.")


def filter_option(example: str) -> Decorator:
    """``--filter``: an OData ``$filter`` (parameter ``filter_``)."""
    return click.option("--filter", "filter_", help=f"OData $filter, e.g. \"{example}\".")


def yes_option(f: F) -> F:
    """``--yes``: do not ask for confirmation."""
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(f)


def json_file_option(what: str) -> Decorator:
    """``--json-file F``: the request body in Batch's JSON (``-`` reads stdin)."""
    return click.option("--json-file", type=click.Path(dir_okay=False, allow_dash=True),
                        help=f"File holding the {what} in Batch's REST JSON ('-': stdin). "
                             "Exclusive with the other options.")


def timeout_option(default_s: float) -> Decorator:
    """``--timeout-s``: give up after this many seconds (the command exits 2)."""
    return click.option("--timeout-s", type=click.FloatRange(min=0), default=default_s,
                        show_default=True, help="Give up after this many seconds (exit 2).")


def destination_option(f: F) -> F:
    """``--destination``: the local file a download is written to (``-``: stdout)."""
    return click.option("--destination", required=True,
                        type=click.Path(dir_okay=False, allow_dash=True),
                        help="Local file to write ('-': stdout).")(f)


def read_text(path: str, option: str) -> str:
    """Read a text file named by ``option`` (``-``: stdin); a usage error when unreadable."""
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint=f"'{option}'") from None


def load_json(path: str) -> Any:
    """Read a JSON file; a usage error names the file, line and column when it is not JSON."""
    text = read_text(path, "--json-file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{'stdin' if path == '-' else path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})", param_hint="'--json-file'") from None


def request_body(json_file: str | None, build: Callable[[], Any], *, required: Sequence[str],
                 shared: Sequence[str] = ()) -> Any:
    """The body of an add command: the JSON of ``--json-file``, or ``build()`` from options.

    The per-property options (every parameter of the command but ``json_file``
    and ``shared``) and ``--json-file`` exclude each other.

    Parameters
    ----------
    json_file
        The ``--json-file`` given, if any.
    build
        Makes the body from the per-property options.
    required
        The per-property options needed when there is no ``--json-file``.
    shared
        Parameters that go with either (``--job-id`` of ``task create``).

    Returns
    -------
    Any
        The request body (Batch's JSON).

    Raises
    ------
    click.UsageError
        Both were given, or neither ``--json-file`` nor every required option.
    click.BadParameter
        The file cannot be read or is not JSON.
    """
    ctx = click.get_current_context()
    names = [n for n in ctx.params if n != "json_file" and n not in shared]

    def flags(params: Iterable[str]) -> str:
        opts = {p.name: max(p.opts, key=len) for p in ctx.command.params}
        return ", ".join(opts.get(n, n) for n in params)

    given = [n for n in names
             if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
    if json_file and given:
        raise click.UsageError(f"--json-file cannot be combined with {flags(given)}.")
    missing = [n for n in required if ctx.params.get(n) is None]
    if not json_file and missing:
        raise click.UsageError(f"give --json-file, or {flags(missing)}.")
    return load_json(json_file) if json_file else build()


def id_of(body: Any) -> str:
    """The ``id`` of a request body, for messages (``""`` when it has none)."""
    return str(body.get("id", "")) if isinstance(body, dict) else ""


def parse_env(_: click.Context, __: click.Parameter,
              values: Sequence[str]) -> list[dict[str, str]]:
    """Click callback: ``NAME=VALUE`` options as Batch ``environmentSettings``."""
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        out.append({"name": name, "value": value})
    return out


def parse_duration(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    """Click callback: an ISO 8601 duration (``PT1H30M``), normalised; a usage error if not one."""
    if value is None:
        return None
    from datetime import timedelta

    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(timedelta)
    try:
        return str(adapter.dump_python(adapter.validate_python(value), mode="json"))
    except ValidationError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 duration such as PT1H30M") from None


def optional_module(name: str) -> Any:
    """Import ``name``; an ``NotAvailable`` error when it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise HpcbatchError(f"{name} is not available in this installation",
                            code="NotAvailable") from None


# ------------------------------------------------------------ shapes of commands


def _with_options(f: Callable[..., Any], options: Sequence[Decorator]) -> Callable[..., Any]:
    """Apply ``options`` so that they appear (and are listed in help) in the given order."""
    for option in reversed(options):
        f = option(f)
    return f


def read_command(group: click.Group, name: str, doc: str, read: Callable[..., Any],
                 *options: Decorator, columns: Sequence[Column] = ()) -> click.Command:
    """Add a command that prints what the service returns: a list, or one object.

    Parameters
    ----------
    group
        The group the command joins.
    name
        The command's name (``list``, ``show`` ...).
    doc
        Its help (first line: the summary in the group's help).
    read
        ``read(client, **parameters)``: the wire JSON (or models) to print.
    *options
        Click option decorators, in the order of the command's help; each
        option's parameter is passed to ``read``. ``-o/--output`` is added.
    columns
        Table columns when ``read`` returns a list.

    Returns
    -------
    click.Command
        The command, added to ``group``.
    """
    def command(**params: Any) -> None:
        emit(read(client(), **params), columns)

    command.__doc__ = doc
    return group.command(name)(_with_options(command, [*options, output_option]))


def select_option(example: str = "id,state") -> Decorator:
    """``--select``: an OData ``$select`` (comma-separated properties; parameter ``select``)."""
    return click.option("--select", help=f"OData $select: comma-separated properties, e.g. "
                                         f"{example}; the table shows them as its columns.")


def _is_time(text: str) -> bool:
    """Whether a wire string is a time (``2026-01-02T03:04:05.123Z``)."""
    from hpcbatch.batch import odata

    if len(text) < 19 or text[4] != "-" or text[10] != "T":
        return False
    try:
        odata.parse_datetime(text)
    except ValueError:
        return False
    return True


def _properties(items: Sequence[dict[str, Any]]) -> list[tuple[str, Any, tuple[str, ...]]]:
    """What a ``$filter`` may name on ``items``: every property path (``a/b``) they hold,
    with the OData kind of its values (strings that are times are ``datetime``)."""
    kinds: dict[str, str] = {}

    def walk(value: dict[str, Any], prefix: str) -> None:
        for key, item in value.items():
            name = f"{prefix}/{key}" if prefix else key
            if isinstance(item, dict):
                walk(item, name)
            elif isinstance(item, bool):
                kinds.setdefault(name, "bool")
            elif isinstance(item, int):
                kinds.setdefault(name, "int")
            elif isinstance(item, str):
                kinds.setdefault(name, "datetime" if _is_time(item) else "string")

    for item in items:
        walk(item, "")
    return [(name, kind, ()) for name, kind in kinds.items()]


def query_locally(items: list[dict[str, Any]], filter_: str | None,
                  select: str | None) -> list[dict[str, Any]]:
    """Apply ``$filter`` and ``$select`` to a list's wire JSON here, for the lists whose
    Batch operation does not take them (the same OData parser and errors as the service).

    Raises
    ------
    hpcbatch.batch.odata_select.InvalidQueryParameterError
        A filter or select the items cannot take (an unknown property, a bad literal).
    """
    if not (filter_ and filter_.strip()) and not (select and select.strip()):
        return items
    if filter_ and filter_.strip():
        from hpcbatch.batch import odata  # the $filter parser (lark, its grammar: 60 ms)

        if items:
            items = odata.ListFilter(_properties(items)).apply(items, filter_)
        else:  # no item to read properties off: nothing passes, but a typo still errors
            odata.check_filter_syntax(filter_)
    if select and select.strip() and items:
        from hpcbatch.batch import odata_select  # no parser

        names = odata_select.parse_select(select, {k for item in items for k in item})
        items = [odata_select.apply_select(item, names) for item in items] if names else items
    return items


def list_command(group: click.Group, name: str, doc: str, read: Callable[..., Any],
                 *options: Decorator, columns: Sequence[Column] = (),
                 example: str = "startswith(id, 'a')",
                 server: Sequence[str] = ("filter", "select")) -> click.Command:
    """Add a ``list`` command: :func:`read_command` with ``--filter`` and ``--select``.

    Parameters
    ----------
    group, name, doc, read, options, columns
        As for :func:`read_command`; ``read`` also gets ``filter_`` and/or ``select``
        for the query options the service applies (``server``).
    example
        A ``$filter`` for the option's help.
    server
        Which of ``"filter"`` and ``"select"`` the Batch operation takes (sent as
        ``$filter``/``$select``); the others are applied here (:func:`query_locally`).

    Returns
    -------
    click.Command
        The command, added to ``group``.
    """
    def command(filter_: str | None, select: str | None, **params: Any) -> None:
        sent = {"filter_": filter_} if "filter" in server else {}
        if "select" in server:
            sent["select"] = select
        items = [_wire(i) for i in read(client(), **params, **sent)]
        items = query_locally(items, None if "filter" in server else filter_,
                              None if "select" in server else select)
        names = [n.strip() for n in select.split(",") if n.strip()] if select else []
        # a $select path names a nested property with "/" (OData): the column reads it so
        emit(items, [(n, n.replace("/", ".")) for n in names] if names else columns)

    command.__doc__ = doc
    return group.command(name)(_with_options(
        command, [*options, filter_option(example), select_option(), output_option]))


def download_command(group: click.Group, doc: str, download: Callable[..., bytes],
                     *options: Decorator) -> click.Command:
    """Add ``download`` to ``group``: write a file's bytes to ``--destination`` (``-``: stdout).

    Parameters
    ----------
    group, doc
        As for :func:`read_command`.
    download
        ``download(client, **parameters)``: the file's bytes.
    *options
        Click option decorators, in help order; ``--destination`` is added.

    Returns
    -------
    click.Command
        The command, added to ``group``.
    """
    def command(destination: str, **params: Any) -> None:
        save(download(client(), **params), destination)

    command.__doc__ = doc
    return group.command("download")(_with_options(command, [*options, destination_option]))


def action_command(group: click.Group, name: str, doc: str, act: Callable[..., Any],
                   done: str | Callable[..., str], *options: Decorator,
                   confirm: str | None = None) -> click.Command:
    """Add a command that does one thing on the service and says so on stderr.

    Parameters
    ----------
    group, name, doc
        As for :func:`read_command`.
    act
        ``act(client, **parameters)``.
    done
        What to say afterwards: a ``str.format`` template of the parameters
        (``"deleting pool {pool_id}"``), or a function of them.
    *options
        Click option decorators, in help order; their parameters go to ``act``.
    confirm
        When given, a question (a template of the parameters) asked before
        acting, and a ``-y/--yes`` option to skip it; "no" aborts (exit 1).

    Returns
    -------
    click.Command
        The command, added to ``group``.
    """
    def command(yes: bool = False, **params: Any) -> None:
        if confirm is not None and not yes:
            click.confirm(confirm.format(**params), abort=True, err=True)
        act(client(), **params)
        note(done(**params) if callable(done) else done.format(**params))

    command.__doc__ = doc
    return group.command(name)(
        _with_options(command, [*options, *([yes_option] if confirm is not None else [])]))
