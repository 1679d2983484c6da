"""``python -m hpcbatch.providers.locallaunch [ssh options] HOST COMMAND...``: an ``ssh`` for local nodes.

Local compute nodes (the embedded default) are processes on this machine with
distinct loopback addresses. MPI launchers treat those addresses as remote
hosts and start their proxies with ``ssh HOST COMMAND``; for a local pool the
launcher is pointed here instead, which runs COMMAND on this machine under
``/bin/sh -c``, as sshd would, with ``HPCBATCH_LAUNCH_HOST`` naming the node
address it was launched for (ranks can report it, as they would report
``SSH_CONNECTION`` on real hosts).
"""

from __future__ import annotations

import os
import sys

# ssh options that take a value (from ssh(1)).
_WITH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")


def split_ssh_args(args: list[str]) -> tuple[str, str]:
    """Return ``(host, remote command)`` from an ``ssh`` argument list.

    Raises
    ------
    ValueError
        No host is given.
    """
    i = 0
    while i < len(args) and args[i].startswith("-") and len(args[i]) > 1:
        opt = args[i]
        i += 1
        if opt[-1] in _WITH_VALUE and len(opt) == 2:
            i += 1
    if i >= len(args):
        raise ValueError("no host given")
    host = args[i].rsplit("@", 1)[-1]
    return host, " ".join(args[i + 1:])


def main(argv: list[str] | None = None) -> int:
    """Run the remote command locally; never returns on success (exec)."""
    try:
        host, command = split_ssh_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"hpcbatch.providers.locallaunch: {exc}", file=sys.stderr)
        return 255
    os.environ["HPCBATCH_LAUNCH_HOST"] = host
    os.chdir(os.path.expanduser("~"))
    if not command:
        return 0
    os.execv("/bin/sh", ["/bin/sh", "-c", command])
    return 255  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
