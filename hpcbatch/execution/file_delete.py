"""Deleting files on a compute node: "File - Delete From Compute Node" and "... From Task".

Runs in the node agent (called through :data:`hpcbatch.execution.nodeops.NODE_CALLS`).
The same confinement as reading node files holds: a path that leaves the node
root (through ``..`` or a symbolic link), the node root itself, and anything
that is or resolves into the node's secrets folder (:data:`SECRETS_DIR`) is
not a node file, so deleting it answers "not found" and touches nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from hpcbatch.execution.environment import SECRETS_DIR

DELETED = "deleted"
"""The file or directory was removed."""
MISSING = "missing"
"""No such node file (also: outside the node root, or the node's secrets)."""
NOT_EMPTY = "not_empty"
"""A directory with entries, and ``recursive`` was not set: nothing removed."""


def _confined(root: Path, path: Path) -> bool:
    """Whether a resolved ``path`` is a node file: inside ``root``, not it, not its secrets."""
    return (path.is_relative_to(root) and path != root
            and not path.is_relative_to(root / SECRETS_DIR))


def delete_path(root_dir: str, rel_path: str, recursive: bool = False) -> str:
    """Delete a file or directory under a node's root directory.

    Parameters
    ----------
    root_dir
        The node root (absolute).
    rel_path
        The file's path relative to the node root (``/``-separated).
    recursive
        Delete a directory with everything in it; without it, only an empty
        directory is deleted (Batch's ``recursive`` query parameter).

    Returns
    -------
    str
        :data:`DELETED`, :data:`MISSING` or :data:`NOT_EMPTY`.

    Notes
    -----
    Both the path's folder and the path itself must resolve inside the node
    root and outside its secrets: a symbolic link whose target is outside is
    not deleted either (reads do not follow it, so deletes do not see it). A
    recursive delete never follows links inside the tree (``shutil.rmtree``).
    """
    root = Path(root_dir).resolve()
    rel = os.path.normpath(rel_path.strip("/")) if rel_path.strip("/") else ""
    if not rel or rel == "." or rel.startswith("..") or os.path.isabs(rel):
        return MISSING
    path = root / rel
    try:
        parent = path.parent.resolve(strict=True)
        target = path.resolve()
    except (OSError, RuntimeError):  # a missing folder, or a link loop
        return MISSING
    if not _confined(root, parent / path.name) or not _confined(root, target):
        return MISSING
    if not os.path.lexists(path):
        return MISSING
    if path.is_dir() and not path.is_symlink():
        if recursive:
            shutil.rmtree(path)
        else:
            try:
                path.rmdir()
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                return NOT_EMPTY
        return DELETED
    path.unlink()
    return DELETED
