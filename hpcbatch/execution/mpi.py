"""MPI launch lines for multi-instance tasks: host lists, hostfiles, ``mpiexec`` argv.

Pure functions (no I/O) that turn what a multi-instance task knows -- its host
list (``AZ_BATCH_HOST_LIST``, ``AZ_BATCH_NODE_LIST``), the processes per node
(ppn) and the MPI implementation (the *flavor*) -- into the launcher command an
application command line runs. Every flavor starts its remote processes
through the ssh wrapper :mod:`hpcbatch.execution.multiinstance` gives the primary
(``HYDRA_LAUNCHER_EXEC``, ``OMPI_MCA_plm_rsh_agent``,
``I_MPI_HYDRA_BOOTSTRAP_EXEC``), so the lines built here need no launcher
options of their own.

Ranks are placed in blocks, as hydra does with ``-ppn``: ranks ``0..ppn-1`` on
the first host, ``ppn..2*ppn-1`` on the second, and so on
(:func:`rank_layout`).

Examples
--------
>>> launch_argv(["./app", "--steps", "10"], ["10.0.0.4", "10.0.0.5"], ppn=2)
['mpiexec', '-hosts', '10.0.0.4,10.0.0.5', '-ppn', '2', '-n', '4', './app', '--steps', '10']
>>> launch_argv(["./app"], ["a", "b"], ppn=2, flavor="openmpi", env={"OMP_NUM_THREADS": "4"})
['mpirun', '--host', 'a:2,b:2', '-np', '4', '-x', 'OMP_NUM_THREADS=4', './app']
>>> print(hostfile(["a", "b"], ppn=4), end="")
a:4
b:4
>>> print(batch_command_line(["./app"], nodes=2))  # doctest: +NORMALIZE_WHITESPACE
/bin/sh -c 'command -v mpiexec >/dev/null 2>&1 || { printf "MPI launcher %s not found on
    node %s; PATH searched: %s\\n" mpiexec "${AZ_BATCH_NODE_ID:-?}" "$PATH" >&2; exit 127; };
    exec mpiexec -hosts "${AZ_BATCH_HOST_LIST:?is not set: not a multi-instance task}"
    -ppn 1 -n 2 ./app'
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

Flavor = Literal["mpich", "openmpi", "intelmpi"]
"""An MPI implementation: MPICH (hydra's ``mpiexec``), Open MPI (``mpirun``),
Intel MPI (``mpiexec.hydra``)."""

FLAVORS: tuple[Flavor, ...] = get_args(Flavor)
"""Every :data:`Flavor`, MPICH first."""

LAUNCHERS: dict[Flavor, str] = {"mpich": "mpiexec", "openmpi": "mpirun",
                                "intelmpi": "mpiexec.hydra"}
"""The launcher executable of each flavor (found on ``PATH``)."""

HOST_LIST_VAR = "AZ_BATCH_HOST_LIST"
"""The variable holding a multi-instance task's hosts (``a,b``), master first."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BAD_HOST = re.compile(r"[\s,;]")


# ------------------------------------------------------------------ validation


def _check_flavor(flavor: str) -> Flavor:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown MPI flavor {flavor!r}; expected one of: {', '.join(FLAVORS)}")
    return flavor


def _check_ppn(ppn: int) -> int:
    if isinstance(ppn, bool) or not isinstance(ppn, int) or ppn < 1:
        raise ValueError(f"ppn (processes per node) must be an integer >= 1, not {ppn!r}")
    return ppn


def _check_hosts(hosts: Sequence[str]) -> list[str]:
    if isinstance(hosts, str):
        raise ValueError(f"hosts must be a sequence of host names, not the string {hosts!r} "  # noqa: TRY004 - documented ValueError: bad input
                         "(use parse_host_list to split a host list)")
    out = list(hosts)
    if not out:
        raise ValueError("hosts is empty: an MPI launch needs at least one host")
    for i, host in enumerate(out):
        if not isinstance(host, str) or not host or _BAD_HOST.search(host):
            raise ValueError(f"hosts[{i}] = {host!r} is not a host name (empty, or holds "
                             "whitespace, ',' or ';')")
    return out


# ------------------------------------------------------------------ host lists


def parse_host_list(value: str) -> list[str]:
    """Split a multi-instance task's host list into host names, master first.

    Parameters
    ----------
    value
        ``AZ_BATCH_HOST_LIST`` (``a,b``) or ``AZ_BATCH_NODE_LIST`` (``a;b``);
        whitespace around entries is ignored.

    Returns
    -------
    list of str
        The hosts, in the list's order (instance 0, the master, first).

    Raises
    ------
    ValueError
        The list is empty, has an empty entry (``a,,b``, a trailing ``,``) or
        mixes both separators.

    Examples
    --------
    >>> parse_host_list("10.0.0.4,10.0.0.5")
    ['10.0.0.4', '10.0.0.5']
    >>> parse_host_list("10.0.0.4;10.0.0.5")
    ['10.0.0.4', '10.0.0.5']
    """
    if not isinstance(value, str):
        raise ValueError(f"a host list is a string such as 'a,b', not {value!r}")  # noqa: TRY004 - documented ValueError: bad input
    if not value.strip():
        raise ValueError("the host list is empty")
    if "," in value and ";" in value:
        raise ValueError(f"host list {value!r} mixes ',' ({HOST_LIST_VAR}) and ';' "
                         "(AZ_BATCH_NODE_LIST) separators")
    sep = ";" if ";" in value else ","
    hosts = [h.strip() for h in value.split(sep)]
    for i, host in enumerate(hosts):
        if not host:
            raise ValueError(f"host list {value!r} has an empty entry at position {i + 1} "
                             f"of {len(hosts)}")
        if re.search(r"\s", host):
            raise ValueError(f"host list {value!r}: entry {host!r} holds whitespace")
    return hosts


def hostfile(hosts: Sequence[str], ppn: int = 1, flavor: Flavor = "mpich") -> str:
    """Return the text of a hostfile (machinefile) giving each host ``ppn`` slots.

    Parameters
    ----------
    hosts
        Host names or addresses, master first.
    ppn
        Processes (slots) per host, >= 1.
    flavor
        ``mpich`` and ``intelmpi`` get ``host:ppn`` lines (hydra's ``-f``);
        ``openmpi`` gets ``host slots=ppn`` lines (``--hostfile``).

    Returns
    -------
    str
        One line per host, newline-terminated.

    Raises
    ------
    ValueError
        Empty or malformed ``hosts``, ``ppn`` < 1, or an unknown ``flavor``.
    """
    flavor = _check_flavor(flavor)
    ppn = _check_ppn(ppn)
    fmt = "{host} slots={ppn}\n" if flavor == "openmpi" else "{host}:{ppn}\n"
    return "".join(fmt.format(host=h, ppn=ppn) for h in _check_hosts(hosts))


def rank_layout(hosts: Sequence[str], ppn: int = 1) -> list[tuple[int, str]]:
    """Return where each rank runs under block placement (hydra's ``-ppn``).

    Parameters
    ----------
    hosts
        Host names, master first.
    ppn
        Processes per host, >= 1.

    Returns
    -------
    list of (int, str)
        ``(rank, host)`` for ranks ``0 .. len(hosts) * ppn - 1``: ranks
        ``i * ppn .. (i + 1) * ppn - 1`` on ``hosts[i]``.

    Raises
    ------
    ValueError
        Empty or malformed ``hosts``, or ``ppn`` < 1.

    Examples
    --------
    >>> rank_layout(["a", "b"], ppn=2)
    [(0, 'a'), (1, 'a'), (2, 'b'), (3, 'b')]
    """
    ppn = _check_ppn(ppn)
    return [(i * ppn + k, h) for i, h in enumerate(_check_hosts(hosts)) for k in range(ppn)]


# ---------------------------------------------------------------------- argv


@dataclass(frozen=True)
class _Shell:
    """Shell text put into a command line as is (not quoted)."""

    text: str


def _build(
    command: Sequence[str],
    host_arg: str | _Shell,
    nprocs: int,
    *,
    ppn: int,
    flavor: Flavor,
    hostfile_path: str | None,
    env: Mapping[str, str] | None,
    extra_args: Sequence[str],
    working_dir: str | None,
    allow_run_as_root: bool,
    launcher: str | None,
) -> list[str | _Shell]:
    if isinstance(command, str):
        raise ValueError(f"command must be a sequence of words, not the string {command!r} "  # noqa: TRY004 - documented ValueError: bad input
                         "(split it with shlex.split)")
    words = list(command)
    if not words or not words[0]:
        raise ValueError("command is empty: give the MPI program and its arguments")
    if isinstance(extra_args, str):
        raise ValueError(f"extra_args must be a sequence of words, not the string {extra_args!r}")  # noqa: TRY004 - documented ValueError: bad input
    env = dict(env or {})
    for name in env:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"env: {name!r} is not an environment variable name")
    if working_dir is not None and not working_dir:
        raise ValueError("working_dir is empty")
    if hostfile_path is not None and not hostfile_path:
        raise ValueError("hostfile_path is empty")
    if allow_run_as_root and flavor != "openmpi":
        raise ValueError(f"allow_run_as_root is an Open MPI option; flavor is {flavor!r}")
    argv: list[str | _Shell] = [launcher or LAUNCHERS[flavor]]
    if flavor == "openmpi":
        argv += ["--hostfile", hostfile_path] if hostfile_path else ["--host", host_arg]
        argv += ["-np", str(nprocs)]
        if working_dir:
            argv += ["--wdir", working_dir]
        for name, value in env.items():
            argv += ["-x", f"{name}={value}"]
        if allow_run_as_root:
            argv.append("--allow-run-as-root")
    else:
        argv += ["-f", hostfile_path] if hostfile_path else ["-hosts", host_arg]
        argv += ["-ppn", str(ppn), "-n", str(nprocs)]
        if working_dir:
            argv += ["-wdir", working_dir]
        for name, value in env.items():
            argv += ["-genv", name, str(value)]
    return [*argv, *extra_args, *words]


def launch_argv(
    command: Sequence[str],
    hosts: Sequence[str],
    *,
    ppn: int = 1,
    flavor: Flavor = "mpich",
    hostfile_path: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    working_dir: str | None = None,
    allow_run_as_root: bool = False,
    nprocs: int | None = None,
    launcher: str | None = None,
) -> list[str]:
    """Return the argv that starts ``command`` as an MPI job of ``ppn`` ranks per host.

    The launch line of "Use multi-instance tasks to run MPI applications in
    Batch" (the application command line of the primary), by flavor:

    * ``mpich``: ``mpiexec -hosts a,b -ppn K -n N [-wdir D] [-genv NAME VALUE ...]
      [extra_args] command ...``
    * ``intelmpi``: the same with ``mpiexec.hydra``;
    * ``openmpi``: ``mpirun --host a:K,b:K -np N [--wdir D] [-x NAME=VALUE ...]
      [--allow-run-as-root] [extra_args] command ...``.

    With ``hostfile_path``, ``-f PATH`` (``--hostfile PATH`` for Open MPI)
    replaces the host option; write that file with :func:`hostfile`.

    Parameters
    ----------
    command
        The MPI program and its arguments, one word each (never split again).
    hosts
        Host names or addresses, master first (:func:`parse_host_list`).
    ppn
        Processes (ranks) per host, >= 1.
    flavor
        The MPI implementation, one of :data:`FLAVORS`.
    hostfile_path
        Path of a hostfile to use instead of listing ``hosts`` on the line.
    env
        Variables set for every rank (``-genv``, Open MPI ``-x``).
    extra_args
        Launcher options put just before ``command``.
    working_dir
        Working directory of every rank (``-wdir``, Open MPI ``--wdir``).
    allow_run_as_root
        Add Open MPI's ``--allow-run-as-root`` (``openmpi`` only).
    nprocs
        Total number of ranks; default ``len(hosts) * ppn``.
    launcher
        The launcher executable; default :data:`LAUNCHERS` ``[flavor]``.

    Returns
    -------
    list of str
        The argv, launcher first; run it without a shell.

    Raises
    ------
    ValueError
        ``command`` or ``hosts`` empty, ``ppn`` or ``nprocs`` < 1, an unknown
        ``flavor`` (the message lists the allowed ones), a bad ``env`` name,
        or ``allow_run_as_root`` with a flavor other than ``openmpi``.
    """
    flavor = _check_flavor(flavor)
    ppn = _check_ppn(ppn)
    hosts = _check_hosts(hosts)
    if nprocs is None:
        nprocs = len(hosts) * ppn
    elif isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be an integer >= 1, not {nprocs!r}")
    host_arg = ",".join(f"{h}:{ppn}" for h in hosts) if flavor == "openmpi" else ",".join(hosts)
    argv = _build(command, host_arg, nprocs, ppn=ppn, flavor=flavor, hostfile_path=hostfile_path,
                  env=env, extra_args=extra_args, working_dir=working_dir,
                  allow_run_as_root=allow_run_as_root, launcher=launcher)
    return [str(a) for a in argv]


def batch_command_line(
    command: Sequence[str],
    nodes: int,
    *,
    ppn: int = 1,
    flavor: Flavor = "mpich",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    working_dir: str | None = None,
    allow_run_as_root: bool = False,
    launcher: str | None = None,
) -> str:
    """Return a task command line running ``command`` over a multi-instance task's nodes.

    The hosts are only known on the node, in ``AZ_BATCH_HOST_LIST``, so the
    line invokes a shell: ``/bin/sh -c '<check> exec <launch argv>'``, where
    ``<check>`` (:func:`launcher_check`) ends the task with exit code 127 and a
    message naming the node and the ``PATH`` searched when the launcher is not
    found, and ``<launch argv>`` is the argv of
    :func:`launch_argv` with the host option taken from the variable and every
    other word shell-quoted. Open MPI's ``--host a:K,b:K`` is derived from the
    variable with ``sed``.

    Parameters
    ----------
    command
        The MPI program and its arguments, one word each.
    nodes
        The task's ``numberOfInstances`` (so the job has ``nodes * ppn`` ranks).
    ppn, flavor, env, extra_args, working_dir, allow_run_as_root, launcher
        As for :func:`launch_argv`.

    Returns
    -------
    str
        The ``commandLine`` of the task (``TaskAddParameter.commandLine``).

    Raises
    ------
    ValueError
        As :func:`launch_argv`, or ``nodes`` < 1.
    """
    flavor = _check_flavor(flavor)
    ppn = _check_ppn(ppn)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be an integer >= 1, not {nodes!r}")
    hosts = f"${{{HOST_LIST_VAR}:?is not set: not a multi-instance task}}"
    if flavor == "openmpi":
        host_arg = _Shell(f'"$(printf %s "{hosts}" | sed "s/,/:{ppn},/g"):{ppn}"')
    else:
        host_arg = _Shell(f'"{hosts}"')
    argv = _build(command, host_arg, nodes * ppn, ppn=ppn, flavor=flavor, hostfile_path=None,
                  env=env, extra_args=extra_args, working_dir=working_dir,
                  allow_run_as_root=allow_run_as_root, launcher=launcher)
    script = " ".join(a.text if isinstance(a, _Shell) else shlex.quote(a) for a in argv)
    return f"/bin/sh -c {shlex.quote(launcher_check(str(argv[0])) + 'exec ' + script)}"


LAUNCHER_NOT_FOUND = 127
"""Exit code of a :func:`batch_command_line` whose launcher is not on the task's ``PATH``
(POSIX's "command not found")."""


def launcher_check(launcher: str) -> str:
    """Return shell text that ends the script when ``launcher`` cannot be run.

    The message names the launcher, the node (``AZ_BATCH_NODE_ID``) and the
    ``PATH`` searched, on stderr; the exit code is :data:`LAUNCHER_NOT_FOUND`.

    Parameters
    ----------
    launcher
        A program name looked up on ``PATH``, or a path.

    Returns
    -------
    str
        ``command -v L >/dev/null 2>&1 || { printf ... >&2; exit 127; }; ``
    """
    name = shlex.quote(launcher)
    return (f"command -v {name} >/dev/null 2>&1 || {{ printf "
            f'"MPI launcher %s not found on node %s; PATH searched: %s\\n" '
            f'{name} "${{AZ_BATCH_NODE_ID:-?}}" "$PATH" >&2; exit {LAUNCHER_NOT_FOUND}; }}; ')
