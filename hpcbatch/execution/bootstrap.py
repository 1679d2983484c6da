"""A node's start on its host in one process: ``python -m hpcbatch.node --launch``.

A node provider (:meth:`hpcbatch.providers.base.TransportProvider.launch`)
runs this once per node start, with a JSON spec on stdin (it holds account
passwords and the pool's private key: never a file or an argument). In order,
as the separate provider steps did:

1. probe: the interpreter has ``distributed``; the node root (a folder of its
   own: new, empty, or marked/used by hpcbatch) is made and marked;
2. identity: :func:`hpcbatch.execution.identity.setup_node` (in this process,
   or through the ``privileged`` prefix -- ``sudo -n`` -- when the host needs it);
3. trust: the pool's private key written (and given to the pool's auto-user
   under user switching), its public key authorised ``restrict,from=`` by the
   argv the provider built;
4. files: the node's TLS material and ``node.json``, mode 0600, written atomically;
5. start: this process forks; the child leaves the SSH session (``setsid``,
   output to ``node.log``) and becomes the node process
   (:func:`hpcbatch.execution.node.serve`), while the parent prints the answer
   and exits. Through a ``privileged`` prefix the node process is started
   as ``PREFIX python -m hpcbatch.node CONFIG`` instead.

The answer is one JSON line on stdout: ``{"root_dir", "identity", "trust"}``
(exit 0), or ``{"error": {"step", "message", "detail"}, "root_dir"}`` (exit 1).
Imports stay light (no Dask) until the child serves.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LaunchFailed", "launch", "run"]


class LaunchFailed(Exception):
    """A start step failed on the host.

    Parameters
    ----------
    step
        ``probe``, ``identity``, ``trust``, ``files`` or ``start``.
    message
        What failed, as a sentence fragment.
    detail
        The cause (an error output), may be empty.
    """

    def __init__(self, step: str, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.step, self.message, self.detail = step, message, detail


def _probe(root_dir: str, marker: str) -> str:
    """Check the interpreter and make and mark the node root; return it expanded."""
    missing = [m for m in ("distributed",) if importlib.util.find_spec(m) is None]
    if missing:
        raise LaunchFailed("probe", "missing Python packages", ", ".join(missing))
    root = os.path.expanduser(root_dir)
    mark = os.path.join(root, marker)
    if (os.path.isdir(root) and os.listdir(root) and not os.path.exists(mark)
            and not os.path.exists(os.path.join(root, "node.json"))):
        raise LaunchFailed("probe", f"root_dir {root} holds files hpcbatch did not put there; "
                           "a node root is emptied on reimage: give a new or empty folder")
    try:
        os.makedirs(root, exist_ok=True)
        open(mark, "a").close()
    except OSError as exc:
        raise LaunchFailed("probe", f"cannot make the node root {root}",
                           exc.strerror or str(exc)) from None
    return root


def _run(argv: Sequence[str], step: str, message: str, stdin: bytes | None = None) -> str:
    """Run ``argv``; its stdout, or :class:`LaunchFailed` naming ``message`` and its stderr."""
    try:
        res = subprocess.run(list(argv), input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise LaunchFailed(step, message, f"{argv[0]}: {exc.strerror or exc}") from None
    if res.returncode != 0:
        raise LaunchFailed(step, message, res.stderr.decode(errors="replace").strip()
                           or f"exit code {res.returncode}")
    return res.stdout.decode(errors="replace")


def _identity(root: str, spec: Mapping[str, Any], privileged: Sequence[str],
              python: str) -> dict[str, Any]:
    """Prepare user switching (:func:`~hpcbatch.execution.identity.setup_node`)."""
    message = "cannot prepare the node's task users"
    if privileged:
        out = _run([*privileged, python, "-m", "hpcbatch.execution.identity", "-", root],
                   "identity", message, stdin=json.dumps(dict(spec)).encode())
        try:
            answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LaunchFailed("identity", message, f"unexpected output {out[-200:]!r}") from None
        return answer
    from hpcbatch.execution import identity

    try:
        return identity.setup_node(root, dict(spec))
    except (identity.UserSwitchError, OSError) as exc:
        raise LaunchFailed("identity", message, str(exc)) from None


def _write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600, making its folder."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise LaunchFailed("files", f"cannot write {path}", exc.strerror or str(exc)) from None


def _trust(root: str, plan: Mapping[str, Any], switching: bool) -> dict[str, Any]:
    """Install the pool's key as the provider's plan says; return its path and login user."""
    variant = plan["switching" if switching else "plain"]
    key_path = os.path.join(root, plan["key_file"])
    _write(key_path, plan["private_key"].encode())
    if variant.get("chown"):
        _run([*variant["chown"], key_path], "trust", variant["chown_error"])
    _run(variant["authorize"], "trust", variant["authorize_error"])
    user = variant.get("user") or plan.get("login") or pwd.getpwuid(os.getuid()).pw_name
    return {"key_path": key_path, "user": user, "trust_user": variant.get("user")}


def launch(spec: Mapping[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Carry out steps 1-4 of the module docstring.

    Parameters
    ----------
    spec
        ``root_dir`` (unexpanded), ``marker``, ``python``, ``privileged`` (argv
        prefix, empty when none), ``identity`` (setup_node spec), ``trust``
        (the provider's plan, or None), ``files`` (relative path to base64),
        ``config`` (node config with root-relative ``tls`` paths), ``config_file``.
    answer
        Filled as the steps go: ``root_dir``, ``identity``, ``trust``.

    Returns
    -------
    dict
        The node config as written to ``{root}/{config_file}``.

    Raises
    ------
    LaunchFailed
        A step failed; its ``step`` says which.
    """
    root = answer["root_dir"] = _probe(spec["root_dir"], spec["marker"])
    ident = _identity(root, spec.get("identity") or {}, spec.get("privileged") or [],
                      spec["python"])
    answer["identity"] = ident
    plan = spec.get("trust")
    answer["trust"] = _trust(root, plan, bool(ident.get("switching"))) if plan else None
    for rel, data in (spec.get("files") or {}).items():
        _write(os.path.join(root, rel), base64.b64decode(data))
    config = dict(spec["config"])
    config["root_dir"] = root
    config["user_switching"] = bool(ident.get("switching"))
    if isinstance(config.get("tls"), Mapping):
        config["tls"] = {k: os.path.join(root, v) for k, v in config["tls"].items()}
    _write(os.path.join(root, spec["config_file"]), json.dumps(config).encode())
    return config


def _detach(log_path: str) -> None:
    """In the forked child: a session of its own, stdin from /dev/null, output to the log."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def run(data: bytes) -> tuple[int, dict[str, Any] | None]:
    """Launch from the JSON spec ``data``; see the module docstring.

    Returns
    -------
    tuple
        ``(exit code, None)`` in the process that answered (exit with the
        code); ``(0, config)`` in the forked child, which serves ``config``.
    """
    answer: dict[str, Any] = {}
    try:
        spec = json.loads(data)
        config = launch(spec, answer)
        root = answer["root_dir"]
        log_path = os.path.join(root, spec["log_file"])
        privileged = spec.get("privileged") or []
        if privileged:
            argv = [*privileged, spec["python"], "-m", "hpcbatch.node",
                    os.path.join(root, spec["config_file"])]
            try:
                with open(log_path, "wb") as log:
                    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise LaunchFailed("start", "cannot start the node process",
                                   exc.strerror or str(exc)) from None
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as exc:
                raise LaunchFailed("start", "cannot start the node process",
                                   exc.strerror or str(exc)) from None
            if pid == 0:
                _detach(log_path)
                return 0, config
    except LaunchFailed as exc:
        print(json.dumps({"error": {"step": exc.step, "message": exc.message,
                                    "detail": exc.detail},
                          "root_dir": answer.get("root_dir")}), flush=True)
        return 1, None
    except (ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"error": {"step": "spec", "message": "bad launch spec",
                                    "detail": str(exc)}}), flush=True)
        return 1, None
    print(json.dumps(answer), flush=True)
    return 0, None
