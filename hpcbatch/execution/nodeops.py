"""Node agent operations beyond running tasks: file delete, node users, certificates.

:data:`NODE_CALLS` maps an operation's name to the function the node agent runs for it
(:meth:`hpcbatch.execution.agent.NodeAgent.call`, in a thread): each takes the node
root and the call's keyword arguments (msgpack values) and returns a msgpack value.
The service calls them with :meth:`hpcbatch.execution.engine.Engine.call`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hpcbatch.execution import certificates, file_delete, node_users


def _delete_file(root: str, a: Mapping[str, Any]) -> str:
    return file_delete.delete_path(root, str(a["rel_path"]), bool(a.get("recursive", False)))


def _add_user(root: str, a: Mapping[str, Any]) -> dict[str, Any]:
    return node_users.add_user(root, str(a["name"]), bool(a.get("is_admin")), str(a["expiry"]),
                               a.get("password"), a.get("ssh_public_key"))


def _update_user(root: str, a: Mapping[str, Any]) -> dict[str, Any]:
    return node_users.update_user(root, str(a["name"]), str(a["expiry"]), a.get("password"),
                                  a.get("ssh_public_key"))


def _delete_user(root: str, a: Mapping[str, Any]) -> dict[str, Any]:
    return node_users.delete_user(root, str(a["name"]))


def _delete_all_users(root: str, _a: Mapping[str, Any]) -> int:
    return node_users.delete_all(root)


def _install_certificates(root: str, a: Mapping[str, Any]) -> list[str]:
    return certificates.install(root, list(a.get("certs") or []))


NODE_CALLS: dict[str, Callable[[str, Mapping[str, Any]], Any]] = {
    "delete_file": _delete_file,
    "add_user": _add_user,
    "update_user": _update_user,
    "delete_user": _delete_user,
    "delete_all_users": _delete_all_users,
    "install_certificates": _install_certificates,
}
"""Operation name -> ``fn(node_root, kwargs)``, run by the node agent in a thread."""
