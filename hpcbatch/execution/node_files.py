"""A node's files as the agent, root, touches them: never through a link a task planted.

Two halves:

* **Writing into a task directory** the agent is about to give to the task's user
  (:func:`real_dir`, :func:`write_in`, :func:`chown_tree`, :data:`LOG_FLAGS`,
  :data:`DIR_FLAGS`): folders and files are opened with ``O_NOFOLLOW`` and owners
  set on descriptors, so a link left by an earlier run (a retry's ``wd``, a
  ``stdout.txt``) cannot turn a ``chown`` or a write onto a file of root's.
* **Serving files** (:class:`NodeFiles`: Task - Get File / List Files, File - Get /
  List From Compute Node, the retention clean-up): a path must stay inside the node
  root and out of the agent's own files (:data:`AGENT_FILES`), and a path reached
  through a link must stay inside the task directory it was asked in.

docs/security.md, "Tasks: least identity" and "Node files and cleanup".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from hpcbatch.execution import identity
from hpcbatch.execution.environment import SECRETS_DIR

LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
"""How a run's ``stdout.txt``/``stderr.txt`` are opened (as ``open(path, "wb")`` would, but
never through a link: the agent runs as root, the task directory is the task's)."""
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How the agent opens a folder of a task directory it is about to give away or write in."""
AGENT_FILES = (SECRETS_DIR, "node.json", "node.log", "tls", "dask")
"""The node agent's own entries of the node root: never served through a link."""


def chown_tree(top: Path, creds: identity.Credentials) -> None:
    """Give a folder and everything under it (downloaded resource files) to a task's user.

    Links are never followed (``lchown``; :func:`os.walk` does not descend into them):
    the agent runs as root and a task may have planted them.
    """
    os.chown(top, creds.uid, creds.gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), creds.uid, creds.gid, follow_symlinks=False)


def real_dir(parent_fd: int, name: str) -> int:
    """Open folder ``name`` of the folder ``parent_fd``, making it; return its descriptor.

    Whatever else holds that name (a link a task planted, a file) is removed first and
    a folder made in its place: the agent, root, never follows a task's link.
    """
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=parent_fd)
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError:  # ELOOP (a link) or ENOTDIR (a file): not a folder of ours
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise
            os.unlink(name, dir_fd=parent_fd)
    raise OSError(f"cannot make the folder {name!r}: something keeps replacing it")


def write_in(top_fd: int, rel: str, data: bytes, mode: int,
              creds: identity.Credentials | None) -> None:
    """Write file ``rel`` under the folder ``top_fd`` (folders made on the way) without
    following any link; give the file and its folder to ``creds`` when set."""
    *folders, name = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in folders or name == "..":
        raise ValueError(f"{rel!r} leaves the task directory")
    fd = os.dup(top_fd)
    try:
        for folder in folders:
            child = real_dir(fd, folder)
            os.close(fd)
            fd = child
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=fd)
        out = os.open(name, LOG_FLAGS, 0o600, dir_fd=fd)
        try:
            os.write(out, data)
            os.fchmod(out, mode)
            if creds is not None:
                os.fchown(out, creds.uid, creds.gid)
                if folders:
                    os.fchown(fd, creds.uid, creds.gid)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def served_fd(fd: int, path: Path) -> bool:
    """Whether the file open as ``fd`` is the regular file at ``path`` (no link swapped in
    between the check of ``path`` and the open)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:  # no /proc: the open did not follow a final link (O_NOFOLLOW)
        return True


class NodeFiles:
    """The files of one node root, as the service reads and removes them.

    Parameters
    ----------
    root_dir
        The node root (``AZ_BATCH_NODE_ROOT_DIR``).
    """

    def __init__(self, root_dir: str) -> None:
        self.root_dir = root_dir

    def served(self, path: Path, lexical: Path | None = None) -> bool:
        """Whether a resolved path may be served: inside the node root, not its secrets.

        With ``lexical`` (the path asked for, ``..`` folded, links not resolved, under
        the resolved node root), a path reached through a link must also stay inside
        the task directory the asked path is in (``workitems/{job}/job-1/{task}``:
        what Task - Get File and List Files read, and a task's links lead nowhere
        else, whatever API reads them), and never reaches the agent's own files
        (:data:`AGENT_FILES`).
        """
        root = Path(self.root_dir).resolve()
        if not path.is_relative_to(root) or path.is_relative_to(root / SECRETS_DIR):
            return False
        if lexical is None or path == lexical:
            return True
        parts = lexical.relative_to(root).parts
        if len(parts) >= 4 and parts[0] == "workitems":  # a task directory's file
            return path.is_relative_to(root.joinpath(*parts[:4]))
        rel = path.relative_to(root).parts
        return not (rel and rel[0] in AGENT_FILES)

    def lexical(self, rel: str) -> Path:
        """A node-root relative path under the resolved node root, ``..`` folded, no link
        resolved (a path that leaves the root stays outside it)."""
        root = Path(self.root_dir).resolve()
        return Path(os.path.normpath(root / rel.strip("/"))) if rel.strip("/") else root

    def list_files(self, rel_dir: str, recursive: bool = False) -> list[dict[str, Any]]:
        """List files under a directory of this node ("File - List From Compute Node").

        Parameters
        ----------
        rel_dir
            Directory relative to the node root.
        recursive
            Descend into subfolders.

        Returns
        -------
        list of dict
            ``{"name", "isDirectory", "size_bytes", "mtime", "ctime", "mode"}``
            (``mtime``, ``ctime``: POSIX seconds; ``mode``: ``st_mode``) with names
            relative to ``rel_dir``; empty when the
            directory does not exist, is outside the node root or is (in) the
            node's secrets folder, which no listing shows. A link that leads out of
            its task directory (or to the agent's own files) is not listed.
        """
        lexical = self.lexical(rel_dir)
        base = lexical.resolve()
        if not base.is_dir() or not self.served(base, lexical):
            return []
        out = []
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                children = list(folder.iterdir())
            except OSError:
                continue
            for p in children:
                try:
                    resolved = p.resolve()
                    st = p.stat()
                except OSError:  # gone meanwhile, or a dangling link
                    continue
                if not self.served(resolved, lexical / p.relative_to(base)):
                    continue
                is_dir = p.is_dir()
                out.append({
                    "name": p.relative_to(base).as_posix(),
                    "isDirectory": is_dir,
                    "size_bytes": st.st_size,
                    "mtime": st.st_mtime,
                    "ctime": st.st_ctime, "mode": st.st_mode,  # stats helper: file properties
                })
                if recursive and is_dir and not p.is_symlink():
                    stack.append(p)
        out.sort(key=lambda e: str(e["name"]))
        return out

    def read_file(self, rel_path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Read part of a file on this node ("File - Get From Compute Node").

        Parameters
        ----------
        rel_path
            Path relative to the node root; must stay inside it.
        offset, length
            Byte range (bytes); ``length`` None reads to the end.

        Returns
        -------
        bytes or None
            The bytes, or None when the file does not exist, is outside the root,
            or is (or resolves into) the node's secrets folder; or is reached
            through a link that leaves its task directory or leads to the agent's
            own files (:meth:`served`). The file is opened without following a
            link, and must be the one checked.
        """
        lexical = self.lexical(rel_path)
        path = lexical.resolve()
        if not self.served(path, lexical) or not path.is_file():
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone, or a link swapped in since
            return None
        with open(fd, "rb") as fh:
            if not served_fd(fd, path):
                return None
            fh.seek(offset)
            return fh.read() if length is None else fh.read(length)

    def remove_dirs(self, rel_dirs: list[str]) -> int:
        """Remove task directories of this node (retention time elapsed).

        Parameters
        ----------
        rel_dirs
            Directories relative to the node root; each must stay inside it.

        Returns
        -------
        int
            How many of them existed (and were removed).
        """
        root = Path(self.root_dir).resolve()
        removed = 0
        for rel in rel_dirs:
            path = (root / rel).resolve()
            if self.served(path) and path != root and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed
