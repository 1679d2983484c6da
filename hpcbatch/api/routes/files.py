"""File routes: "File - List/Get/Get Properties/Delete From Task" and "... From Compute Node"."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hpcbatch.api.http import (
    Params,
    base_url,
    bool_query,
    empty_reply,
    header_date,
    http_date,
    page_reply,
    param,
    parse_wire_time,
    service,
)
from hpcbatch.batch import odata
from hpcbatch.batch.errors import BadRequestError, HpcbatchError, not_found
from hpcbatch.core.files import NodeFiles

routes = web.RouteTableDef()

FILE_MODE = "0o100644"
"""``ocp-batch-file-mode`` of a regular file on a Linux node, as Batch reports it."""


_BYTE_RANGE = re.compile(r"bytes=(\d{1,18})-(\d{1,18})?")
"""``ocp-range``/``Range``: ``bytes=start-end`` or ``bytes=start-`` (18 digits at most:
offsets fit in 64 bits)."""


def _range(request: web.Request) -> tuple[int, int | None]:
    """Parse ``ocp-range``/``Range: bytes=start-[end]`` into (offset, length).

    Raises
    ------
    BadRequestError
        ``InvalidHeaderValue``: a range that is not ``bytes=start-[end]`` with
        ``start <= end``, naming the header.
    """
    name = "ocp-range" if "ocp-range" in request.headers else "Range"
    rng = request.headers.get(name)
    if rng is None:
        return 0, None
    m = _BYTE_RANGE.fullmatch(rng.strip())
    if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
        raise BadRequestError(
            f"The value of the {name} header is not a valid byte range: {rng[:100]!r}; the "
            "format is bytes=startRange-endRange (or bytes=startRange-), with "
            "startRange <= endRange.", code="InvalidHeaderValue",
            values={"HeaderName": name, "HeaderValue": rng[:100]})
    offset = int(m.group(1))
    return offset, (int(m.group(2)) - offset + 1 if m.group(2) is not None else None)


def _clamp_range(offset: int, length: int | None,
                 entry: Mapping[str, Any] | None) -> int | None:
    """Check a range against the file's size and return the length to read.

    A range starting exactly at the end answers no bytes, so a reader following a growing
    file can always ask from the offset it has read up to; an end past the end of the file
    is cut there (the node never allocates more than the file holds).

    Raises
    ------
    HpcbatchError
        ``416 InvalidRange``: the range starts past the end of the file.
    """
    size = ((entry or {}).get("properties") or {}).get("contentLength")
    if not isinstance(size, int):
        return length
    if offset > size:
        raise HpcbatchError(
            f"The range specified is invalid for the current size of the file: it starts at "
            f"byte {offset} and the file has {size} bytes.", code="InvalidRange", status=416,
            values={"FileSize": str(size)})
    return None if length is None else min(length, size - offset)


def _file_headers(request: web.Request, entry: Mapping[str, Any] | None,
                  size_bytes: int | None) -> dict[str, str]:
    """The headers of "File - Get"/"Get Properties": url, kind, mode, times, length."""
    props = (entry or {}).get("properties") or {}
    modified = parse_wire_time(props.get("lastModified")) or datetime.now(UTC)
    created = parse_wire_time(props.get("creationTime")) or modified
    headers = {
        "ocp-batch-file-isdirectory": "true" if (entry or {}).get("isDirectory") else "false",
        "ocp-batch-file-url": f"{base_url(request)}{quote(request.path)}",
        "ocp-batch-file-mode": props.get("fileMode") or FILE_MODE,
        "ocp-creation-time": http_date(created),
        "Last-Modified": http_date(modified),
        "Content-Type": "application/octet-stream",
    }
    if size_bytes is not None:
        headers["Content-Length"] = str(size_bytes)
    return headers


def _not_modified(request: web.Request, entry: Mapping[str, Any] | None) -> bool:
    """True when ``If-Modified-Since`` says the client's copy is current (answer 304)."""
    since = header_date(request, "If-Modified-Since")
    props = (entry or {}).get("properties") or {}
    modified = parse_wire_time(props.get("lastModified"))
    return since is not None and modified is not None and modified.replace(microsecond=0) <= since


def _files_filter(request: web.Request, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply ``$filter``: only ``startswith(name, '...')``, case-sensitive, is supported."""
    text = request.query.get("$filter")
    if not text:
        return files
    m = re.fullmatch(r"\s*startswith\(\s*name\s*,\s*'((?:[^']|'')*)'\s*\)\s*", text)
    if not m:
        raise odata.InvalidQueryParameterError(
            "$filter", text, "only startswith(name, '...') is supported on file lists")
    prefix = m.group(1).replace("''", "'")
    return [f for f in files if f.get("name", "").startswith(prefix)]


@dataclass(frozen=True)
class _Folder:
    """Where the "File - ..." operations of one kind read: a compute node's root dir, or
    the directory of a task on the node that ran it."""

    path: str
    """The path the folder's ``/files`` hang under."""
    where: str
    """``"Compute Node"`` or ``"Task"``: the operations' names end ``From {where}``."""
    entries: Callable[[NodeFiles, Params, str, bool], Awaitable[list[dict[str, Any]]]]
    """Lists the folder's ``(parent, recursive)`` entries: "File - List From ..."."""
    content: Callable[[NodeFiles, Params, int, int | None], Awaitable[bytes]]
    """Reads the file ``{path}`` from ``(offset, length)``: "File - Get From ..."."""
    delete: Callable[[NodeFiles, Params, bool], Awaitable[None]]
    """Deletes the file or directory ``{path}`` (``recursive``): "File - Delete From ..."."""
    by_parent: bool
    """Whether a file's entry is looked up in its parent dir (a node's root dir is large)
    rather than in the whole recursive listing (a task's dir)."""

    async def entry(self, request: web.Request) -> dict[str, Any] | None:
        """The listing entry of the file ``{path}`` (None: there is none)."""
        name = param(request, "path").strip("/")
        parent = name.rpartition("/")[0] if self.by_parent else ""
        entries = await self.entries(service(request).files, request.match_info, parent,
                                     not self.by_parent)
        return next((e for e in entries if e.get("name", "").strip("/") == name), None)

    def add_routes(self) -> None:
        """Route "File - List From ...", "File - Get From ..." and "File - Get Properties
        From ..." of this folder."""

        async def list_files(request: web.Request) -> web.Response:
            files = await self.entries(service(request).files, request.match_info, "",
                                       bool_query(request, "recursive"))
            return page_reply(request, "files", _files_filter(request, files))

        async def get_file(request: web.Request) -> web.Response:
            offset, length = _range(request)
            entry = await self.entry(request)
            if _not_modified(request, entry):
                return empty_reply(304)
            length = _clamp_range(offset, length, entry)
            data = await self.content(service(request).files, request.match_info, offset,
                                      length)
            headers = _file_headers(request, entry, None)
            del headers["Content-Type"]
            return web.Response(body=data, content_type="application/octet-stream",
                                headers=headers)

        async def get_properties(request: web.Request) -> web.Response:
            entry = await self.entry(request)
            if entry is None:
                raise not_found("File", param(request, "path"))
            size = (entry.get("properties") or {}).get("contentLength")
            return web.Response(status=200, headers=_file_headers(request, entry, size or 0))

        async def delete_file(request: web.Request) -> web.Response:
            await self.delete(service(request).files, request.match_info,
                              bool_query(request, "recursive"))
            return empty_reply(200)

        for handler, operation in ((list_files, "List"), (get_file, "Get"),
                                   (get_properties, "Get Properties"), (delete_file, "Delete")):
            handler.__doc__ = f'"File - {operation} From {self.where}".'
        routes.get(f"{self.path}/files")(list_files)
        routes.get(f"{self.path}/files/{{path:.+}}", allow_head=False)(get_file)
        routes.head(f"{self.path}/files/{{path:.+}}")(get_properties)
        routes.delete(f"{self.path}/files/{{path:.+}}")(delete_file)


NODE_FOLDER = _Folder(
    "/pools/{pool}/nodes/{node}", "Compute Node",
    lambda files, p, parent, recursive: files.list_node_files(p["pool"], p["node"], parent,
                                                              recursive),
    lambda files, p, offset, length: files.get_node_file(p["pool"], p["node"], p["path"],
                                                         offset, length),
    lambda files, p, recursive: files.delete_node_file(p["pool"], p["node"], p["path"],
                                                       recursive),
    by_parent=True)
"""A compute node's root dir: ``/pools/{pool}/nodes/{node}/files``."""

TASK_FOLDER = _Folder(
    "/jobs/{job}/tasks/{task}", "Task",
    lambda files, p, _parent, recursive: files.list_task_files(p["job"], p["task"], recursive),
    lambda files, p, offset, length: files.get_task_file(p["job"], p["task"], p["path"],
                                                         offset, length),
    lambda files, p, recursive: files.delete_task_file(p["job"], p["task"], p["path"],
                                                       recursive),
    by_parent=False)
"""A task's directory: ``/jobs/{job}/tasks/{task}/files``."""

NODE_FOLDER.add_routes()
TASK_FOLDER.add_routes()
