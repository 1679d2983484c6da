"""The Python SDK: :class:`BatchClient`, a client of the Batch REST API.

Method names follow today's azure-batch SDK (``create_pool``, ``list_tasks``,
``download_task_file`` ...). Arguments are the wire models of
:mod:`hpcbatch.batch.models` or plain dicts in Batch's JSON; results are models.
Each read that returns models has a ``*_json`` sibling (``list_tasks_json``,
``get_pool_json`` ...) returning the wire JSON as the service sent it, without
building models: what the CLI prints.

Importing this module imports neither ``pydantic`` (the models are built on a
read's first use) nor ``requests`` (:mod:`hpcbatch.client.transport` is on the
standard library), nor anything of the service: a client starts at once.
:class:`hpcbatch.LocalBatch` (:mod:`hpcbatch.client.local`) runs a service in
this process and yields its client.

Examples
--------
>>> with LocalBatch(nodes=3) as client:                        # doctest: +SKIP
...     client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 3})
...     client.wait_for_pool("p")
...     client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
...     client.create_tasks("j", [{"id": f"t{i}", "commandLine": "hostname"} for i in range(9)])
...     client.wait_for_tasks("j")
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from hpcbatch.batch.errors import HpcbatchError, ServiceNotRunningError
from hpcbatch.batch.sharedkey import decode_key
from hpcbatch.batch.tokens import CA_PEM_ENV, OPERATOR_HEADER, TOKEN_ENV, operator_proof
from hpcbatch.client.auth import SharedKeyAuth, authorize, content_length
from hpcbatch.client.state import service_connection
from hpcbatch.client.transport import Response, Transport
from hpcbatch.version import __version__

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hpcbatch.batch.models import (
        ComputeNode,
        Job,
        NodeFile,
        Pool,
        SubtaskInformation,
        Task,
        TaskAddResult,
    )

    M = TypeVar("M", bound=BaseModel)

API_VERSION = "2025-06-01"
"""The Batch REST api-version this client speaks."""

USER_AGENT = f"hpcbatch/{__version__}"

Json = dict[str, Any]


class BatchError(HpcbatchError):
    """An error answered by the service, with Batch's code and HTTP status."""


def _wire(obj: Any) -> Any:
    """Batch JSON of a wire model (any pydantic model), or ``obj`` itself."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
    return obj


@functools.cache
def _partial(model: type[M]) -> type[M]:
    """A subclass of ``model`` whose every field is optional: what a ``$select`` reply holds."""
    from pydantic import Field, create_model

    def optional(annotation: Any) -> Any:
        return annotation | None

    fields: dict[str, Any] = {name: (optional(f.annotation), Field(None, alias=f.alias))
                              for name, f in model.model_fields.items()}
    return create_model(f"Partial{model.__name__}", __base__=model, **fields)


def _parse(model: type[M], data: Mapping[str, Any], partial: bool = False) -> M:
    """Build a model from wire JSON; ``partial``: a ``$select`` reply, fields may be missing."""
    cls = _partial(model) if partial else model
    return cls.model_validate({k: v for k, v in data.items() if k != "odata.metadata"})


def _models() -> Any:
    """:mod:`hpcbatch.batch.models`, imported on first use (building it takes ~0.2 s)."""
    from hpcbatch.batch import models

    return models


class BatchClient:
    """A client of an hpcbatch service (or any Batch REST endpoint).

    Every request is signed with SharedKey (with a signed nonce, so that the
    service's replay check never refuses it) and every body carries its
    ``Content-MD5``; or, with ``token``, authenticated as ``Authorization:
    Bearer`` with a job-scoped token (``AZ_BATCH_AUTHENTICATION_TOKEN``).

    Parameters
    ----------
    endpoint
        Service URL, e.g. ``http://127.0.0.1:8600`` or ``https://host:8600``.
    account
        Account name.
    key
        Base64 account key (SharedKey authentication); None with ``token``.
    timeout_s
        Per-request timeout in seconds (to connect, and for each read of the reply).
    token
        A job-scoped authentication token instead of the key (a task's
        ``AZ_BATCH_AUTHENTICATION_TOKEN``); it allows operations on its job only.
    ca_file, ca_pem
        PEM file, or PEM text, of the CA an ``https`` endpoint's certificate must
        chain to (an hpcbatch service's ``{state_dir}/tls/ca.pem``, or what a task
        finds in ``HPCBATCH_CA_PEM``); both None: the system's CAs.
    operator_key
        The state dir's operator key (base64): adds the ``hpcbatch-operator``
        proof to each request, which lets the operator add inventory hosts API
        callers may not (``provider: local``, local key paths, host-key checking off).

    Raises
    ------
    ValueError
        ``key`` or ``operator_key`` is not base64, or neither ``key`` nor ``token`` is given.
    """

    def __init__(self, endpoint: str, account: str, key: str | None = None, *,
                 timeout_s: float = 120.0, token: str | None = None, ca_file: str | None = None,
                 ca_pem: str | None = None, operator_key: str | None = None) -> None:
        if not key and not token:
            raise ValueError("BatchClient needs an account key or an authentication token")
        self.endpoint = endpoint.rstrip("/")
        self.account = account
        self.timeout_s = timeout_s
        self._key = key or ""
        self._token = token
        # fails early on a bad key; signs raw requests (requests.Session auth)
        self._auth = SharedKeyAuth(account, key) if key else None
        if operator_key:
            decode_key(operator_key)  # fail early on a bad key
        self._operator_key = operator_key
        self._transport = Transport(timeout_s, ca_file=ca_file, ca_pem=ca_pem)

    def __repr__(self) -> str:  # never show the key
        return f"BatchClient(endpoint={self.endpoint!r}, account={self.account!r})"

    # ----------------------------------------------------------- construction

    @classmethod
    def from_environment(cls, state_dir: Path | str | None = None) -> BatchClient:
        """Find a service: the ``AZURE_BATCH_*`` variables, a task's token, else a state dir.

        In order: ``state_dir`` when given (the service's ``service.json``, key
        file, CA and operator key); ``AZURE_BATCH_ENDPOINT`` with
        ``AZURE_BATCH_ACCOUNT`` and ``AZURE_BATCH_ACCESS_KEY`` (or
        ``AZ_BATCH_AUTHENTICATION_TOKEN``); inside a task that asked for a token
        (``authenticationTokenSettings``), ``AZ_BATCH_ACCOUNT_URL``,
        ``AZ_BATCH_ACCOUNT_NAME`` and ``AZ_BATCH_AUTHENTICATION_TOKEN``; else the
        service of ``$HPCBATCH_STATE_DIR`` or ``~/.hpcbatch``. With the
        variables, ``REQUESTS_CA_BUNDLE`` names the CA file to trust (as for the
        official SDK), or ``HPCBATCH_CA_PEM`` holds it (what an HTTPS service
        gives a task that has a token).

        Parameters
        ----------
        state_dir
            The service's state dir; default ``$HPCBATCH_STATE_DIR`` or ``~/.hpcbatch``.
            When given, the variables are not looked at.

        Raises
        ------
        ServiceNotRunningError
            When neither the variables nor a running service's ``service.json`` is found.
        HpcbatchError
            ``InvalidAccountKey``: the key found is not base64.
        """
        env = os.environ
        token = env.get(TOKEN_ENV) or None
        ca_file = env.get("REQUESTS_CA_BUNDLE") or None
        ca_pem = env.get(CA_PEM_ENV) or None
        operator_key = None
        if state_dir is None and env.get("AZURE_BATCH_ENDPOINT"):
            missing = [v for v in ("AZURE_BATCH_ACCOUNT",) if not env.get(v)]
            if not env.get("AZURE_BATCH_ACCESS_KEY") and not token:
                missing.append(f"AZURE_BATCH_ACCESS_KEY (or {TOKEN_ENV})")
            if missing:
                raise ServiceNotRunningError(
                    f"AZURE_BATCH_ENDPOINT is set but {', '.join(missing)} is not.")
            endpoint, account = env["AZURE_BATCH_ENDPOINT"], env["AZURE_BATCH_ACCOUNT"]
            key = env.get("AZURE_BATCH_ACCESS_KEY") or None
            token = None if key else token
            source = "AZURE_BATCH_ACCESS_KEY"
        elif state_dir is None and token and env.get("AZ_BATCH_ACCOUNT_URL"):
            endpoint, account, key = (env["AZ_BATCH_ACCOUNT_URL"],
                                      env.get("AZ_BATCH_ACCOUNT_NAME", ""), None)
            source = TOKEN_ENV
        else:
            conn = service_connection(state_dir)
            endpoint, account, key, token = conn.endpoint, conn.account, conn.key, None
            ca_file, ca_pem, operator_key = conn.ca_file, None, conn.operator_key
            source = "the service's key file"
        try:
            return cls(endpoint, account, key, token=token, ca_file=ca_file, ca_pem=ca_pem,
                       operator_key=operator_key)
        except ValueError as exc:
            raise HpcbatchError(f"{source} is not a valid account key: {exc}",
                                code="InvalidAccountKey", status=400) from None

    def close(self) -> None:
        """Close the client's connections."""
        self._transport.close()

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- transport

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 body: Any = None, headers: Mapping[str, str] | None = None,
                 raw: bytes | None = None) -> Response:
        """Send a signed request; a path is under the endpoint (with ``api-version``), a URL as is.

        Raises
        ------
        BatchError
            The service answered with an error (its Batch code and status).
        ServiceNotRunningError
            The endpoint cannot be reached.
        TimeoutError
            No answer within ``timeout_s``.
        """
        if path.startswith("http"):
            url = path
        else:
            query = {"api-version": API_VERSION,
                     **{k: v for k, v in (params or {}).items() if v is not None}}
            url = f"{self.endpoint}{path}?{urlencode(query, doseq=True)}"
        data = raw
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if raw is not None:
            hdrs["Content-Type"] = "application/octet-stream"
        if body is not None:
            data = json.dumps(_wire(body), separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json; odata=minimalmetadata"
        length = content_length(method, None if data is None else len(data))
        if length is not None:
            hdrs["Content-Length"] = length
        if data is not None:  # binds the body to the signature, even over plain HTTP
            hdrs["Content-MD5"] = base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")

        def signed() -> dict[str, str]:
            out = dict(hdrs)
            if self._token:
                out["Authorization"] = f"Bearer {self._token}"
                return out
            authorize(method, url, out, self.account, self._key, nonce=True)
            if self._operator_key:
                out[OPERATOR_HEADER] = operator_proof(self._operator_key, out["Authorization"])
            return out

        try:
            resp = self._transport.request(method, url, signed, data)
        except TimeoutError:
            raise TimeoutError(f"the hpcbatch service at {self.endpoint} did not answer "
                               f"within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceNotRunningError(f"cannot reach the hpcbatch service at "
                                         f"{self.endpoint}: {exc}") from None
        if resp.status >= 400:
            try:
                err = resp.json()
                msg = err.get("message", {}).get("value", resp.text).split("\nRequestId:")[0]
                values = {v["key"]: v["value"] for v in err.get("values", [])}
            except (ValueError, AttributeError, KeyError, TypeError):
                raise BatchError(resp.text or resp.reason, code="Unknown",
                                 status=resp.status) from None
            raise BatchError(msg, code=err.get("code", "Unknown"), status=resp.status,
                             values=values)
        return resp

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Json:
        """GET one resource's wire JSON (without ``odata.metadata``)."""
        data: Json = self._request("GET", path, params=params).json()
        data.pop("odata.metadata", None)
        return data

    def _list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Json]:
        resp = self._request("GET", path, params=params)
        while True:
            body = resp.json()
            yield from body.get("value", [])
            nxt = body.get("odata.nextLink")
            if not nxt:
                return
            resp = self._request("GET", nxt)

    @staticmethod
    def _q(value: str) -> str:
        return quote(value, safe="")

    # ---------------------------------------------------------------- dashboard

    def dashboard_sign_in_url(self) -> str:
        """Mint a one-time sign-in link to the service's web dashboard (hpcbatch's own).

        ``POST /dashboard/tokens``, signed with the account key like every
        request: only a holder of the key gets a link. The link signs a browser
        in once, within 5 minutes, and sets the dashboard's session cookie.

        Returns
        -------
        str
            ``{endpoint}/dashboard/signin?token=...``.

        Raises
        ------
        BatchError
            ``AuthenticationFailed`` (a wrong key) or another service error.
        """
        url: str = self._request("POST", "/dashboard/tokens").json()["url"]
        return url

    # ---------------------------------------------------------------- inventory

    def add_hosts(self, hosts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add hosts to the service's inventory (see :class:`hpcbatch.providers.inventory.Host`)."""
        body = [h.model_dump(mode="json") if hasattr(h, "model_dump") else dict(h) for h in hosts]
        return self._request("POST", "/inventory/hosts", body={"hosts": body}).json()["value"]


    def check_hosts(self, pool_id: str | None = None,
                    launcher: str | None = None) -> dict[str, Any]:
        """Preflight the inventory's hosts (hpcbatch extension ``POST /inventory/hosts/check``).

        Parameters
        ----------
        pool_id
            Only this pool's hosts, and ssh between each pair of its nodes when
            it has inter-node communication; None: every host.
        launcher
            The MPI launcher to look for on the task PATH (default ``mpiexec``).

        Returns
        -------
        dict
            ``{"value": [{host, check, status (pass|fail|skip), detail, fix}, ...],
            "service": {"hpcbatch", "distributed"}, "failed": [host, ...]}``.

        Raises
        ------
        BatchError
            ``PoolNotFound``; ``InvalidPropertyValue``.
        """
        body = {k: v for k, v in (("poolId", pool_id), ("launcher", launcher)) if v}
        return self._request("POST", "/inventory/hosts/check", body=body).json()
    def list_supported_images(self, filter: str | None = None  # noqa: A002 - SDK name
                              ) -> list[dict[str, Any]]:
        """The images the inventory's hosts offer ("Account - List Supported Images"):
        ``ImageInformation`` wire JSON (``nodeAgentSKUId``, ``imageReference``,
        ``verificationType`` ...), with an optional OData ``$filter``."""
        return list(self._list("/supportedimages", {"$filter": filter}))

    def list_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory: hosts with the pool each belongs to."""
        return self._request("GET", "/inventory/hosts").json()["value"]

    def remove_host(self, name: str) -> None:
        """Remove a host that belongs to no pool from the inventory."""
        self._request("DELETE", f"/inventory/hosts/{self._q(name)}")

    # ------------------------------------------------------ application packages

    def create_application_package(self, application_id: str, version: str,
                                   package_file: str | Path) -> None:
        """Upload a zip as an application package version (the first becomes the default)."""
        data = Path(package_file).read_bytes()
        self._request("PUT", f"/applications/{self._q(application_id)}/versions/"
                      f"{self._q(version)}", raw=data)

    def set_default_application_version(self, application_id: str, version: str | None) -> None:
        """Set (None: clear) an application's default version."""
        self._request("PATCH", f"/applications/{self._q(application_id)}",
                      body={"defaultVersion": version})

    def delete_application_package(self, application_id: str, version: str) -> None:
        """Delete an application package version."""
        self._request("DELETE", f"/applications/{self._q(application_id)}/versions/"
                      f"{self._q(version)}")

    def list_applications(self) -> list[dict[str, Any]]:
        """List applications ("Application - List"): id, displayName, versions, defaultVersion."""
        return list(self._list("/applications"))

    def get_application(self, application_id: str) -> dict[str, Any]:
        """Return one application ("Application - Get")."""
        return self._get(f"/applications/{self._q(application_id)}")

    # -------------------------------------------------------------------- pools

    def create_pool(self, pool: Any) -> None:
        """Add a pool ("Pool - Add"); ``pool`` is a :class:`~hpcbatch.batch.models.PoolSpec` or its JSON."""
        self._request("POST", "/pools", body=pool)

    def get_pool(self, pool_id: str) -> Pool:
        """Return a pool ("Pool - Get"); raises :class:`BatchError` ``PoolNotFound``."""
        return _parse(_models().Pool, self.get_pool_json(pool_id))

    def get_pool_json(self, pool_id: str) -> Json:
        """:meth:`get_pool` as wire JSON."""
        return self._get(f"/pools/{self._q(pool_id)}")

    def patch_pool(self, pool_id: str, patch: Mapping[str, Any]) -> None:
        """Update a pool's mutable properties, e.g. ``{"metadata": [...]}`` ("Pool - Patch";
        REST ``PATCH /pools/{poolId}``: the properties given replace the pool's)."""
        self._request("PATCH", f"/pools/{self._q(pool_id)}", body=patch)

    def list_pool_usage_metrics_json(self, start_time: str | None = None,
                                     end_time: str | None = None,
                                     filter: str | None = None) -> list[Json]:
        """Core hours per pool per 30-minute interval ("Pool - List Usage Metrics").

        Parameters
        ----------
        start_time, end_time
            ISO 8601 times (``2026-01-02T03:00:00Z``): the intervals that overlap them;
            without either, the last interval that has ended.
        filter
            OData ``$filter`` on ``poolId``, ``startTime``, ``endTime``.

        Returns
        -------
        list[dict]
            ``PoolUsageMetrics``: ``poolId``, ``startTime``, ``endTime``, ``vmSize``,
            ``totalCoreHours``.
        """
        return list(self._list("/poolusagemetrics", {"starttime": start_time,
                                                     "endtime": end_time, "$filter": filter}))

    def list_pools(self, filter: str | None = None) -> list[Pool]:  # noqa: A002 - SDK name
        """Return pools ("Pool - List"), with an optional OData ``$filter``."""
        return [_parse(_models().Pool, p) for p in self.list_pools_json(filter)]

    def list_pools_json(self, filter: str | None = None,
                        select: str | None = None) -> list[Json]:
        """:meth:`list_pools` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list("/pools", {"$filter": filter, "$select": select}))

    def resize_pool(self, pool_id: str, target_dedicated_nodes: int,
                    node_deallocation_option: str | None = None) -> None:
        """Resize a pool ("Pool - Resize") to ``target_dedicated_nodes`` nodes."""
        body: dict[str, Any] = {"targetDedicatedNodes": target_dedicated_nodes}
        if node_deallocation_option:
            body["nodeDeallocationOption"] = node_deallocation_option
        self._request("POST", f"/pools/{self._q(pool_id)}/resize", body=body)

    def delete_pool(self, pool_id: str) -> None:
        """Delete a pool ("Pool - Delete"); its hosts return to the inventory."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}")

    def enable_pool_auto_scale(self, pool_id: str, auto_scale_formula: str,
                               auto_scale_evaluation_interval: str | None = None) -> None:
        """Enable autoscale ("Pool - Enable Auto Scale"); the interval is ISO 8601 (``PT5M``)."""
        body = {"autoScaleFormula": auto_scale_formula}
        if auto_scale_evaluation_interval:
            body["autoScaleEvaluationInterval"] = auto_scale_evaluation_interval
        self._request("POST", f"/pools/{self._q(pool_id)}/enableautoscale", body=body)

    def disable_pool_auto_scale(self, pool_id: str) -> None:
        """Disable autoscale ("Pool - Disable Auto Scale")."""
        self._request("POST", f"/pools/{self._q(pool_id)}/disableautoscale")

    def evaluate_pool_auto_scale(self, pool_id: str, auto_scale_formula: str) -> dict[str, Any]:
        """Evaluate a formula without applying it ("Pool - Evaluate Auto Scale").

        Returns
        -------
        dict
            ``AutoScaleRun``: ``timestamp``, ``results`` (``$TargetDedicatedNodes=...;``), ``error``.
        """
        return self._request("POST", f"/pools/{self._q(pool_id)}/evaluateautoscale",
                             body={"autoScaleFormula": auto_scale_formula}).json()

    def list_nodes(self, pool_id: str, filter: str | None = None  # noqa: A002 - SDK name
                   ) -> list[ComputeNode]:
        """Return a pool's compute nodes ("Compute Node - List"), with an optional OData ``$filter``."""
        return [_parse(_models().ComputeNode, n) for n in self.list_nodes_json(pool_id, filter)]

    def list_nodes_json(self, pool_id: str, filter: str | None = None,
                        select: str | None = None) -> list[Json]:
        """:meth:`list_nodes` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list(f"/pools/{self._q(pool_id)}/nodes",
                               {"$filter": filter, "$select": select}))

    def get_node(self, pool_id: str, node_id: str) -> ComputeNode:
        """Return one compute node ("Compute Node - Get")."""
        return _parse(_models().ComputeNode, self.get_node_json(pool_id, node_id))

    def get_node_json(self, pool_id: str, node_id: str) -> Json:
        """:meth:`get_node` as wire JSON."""
        return self._get(f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}")

    def reboot_node(self, pool_id: str, node_id: str, node_reboot_option: str | None = None) -> None:
        """Reboot a node ("Compute Node - Reboot"): requeue, terminate, taskcompletion or retaineddata."""
        body = {"nodeRebootOption": node_reboot_option} if node_reboot_option else None
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/reboot",
                      body=body)

    def reimage_node(self, pool_id: str, node_id: str, node_reimage_option: str | None = None) -> None:
        """Reimage a node ("Compute Node - Reimage"): its root dir is wiped, then it reboots."""
        body = {"nodeReimageOption": node_reimage_option} if node_reimage_option else None
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/reimage",
                      body=body)

    def disable_node_scheduling(self, pool_id: str, node_id: str,
                                node_disable_scheduling_option: str | None = None) -> None:
        """Stop new tasks on a node ("Compute Node - Disable Scheduling")."""
        body = ({"nodeDisableSchedulingOption": node_disable_scheduling_option}
                if node_disable_scheduling_option else None)
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                      "/disablescheduling", body=body)

    def enable_node_scheduling(self, pool_id: str, node_id: str) -> None:
        """Let a node take tasks again ("Compute Node - Enable Scheduling")."""
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                      "/enablescheduling")

    def remove_nodes(self, pool_id: str, node_ids: Sequence[str],
                     node_deallocation_option: str | None = None) -> None:
        """Remove nodes from a pool ("Pool - Remove Nodes"); the target drops with them."""
        body: dict[str, Any] = {"nodeList": list(node_ids)}
        if node_deallocation_option:
            body["nodeDeallocationOption"] = node_deallocation_option
        self._request("POST", f"/pools/{self._q(pool_id)}/removenodes", body=body)

    def wait_for_pool(self, pool_id: str, timeout_s: float = 300.0,
                      poll_interval_s: float = 0.25) -> list[ComputeNode]:
        """Wait until a pool is steady and none of its nodes is still starting.

        Returns
        -------
        list of ComputeNode
            The nodes, in whatever final state each reached (``idle``, ``unusable`` ...).

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        settling = {"creating", "starting", "waitingforstarttask", "leavingpool", "rebooting",
                    "reimaging"}
        while True:
            pool = self.get_pool(pool_id)
            nodes = self.list_nodes(pool_id)
            if pool.allocation_state == "steady" and not any(n.state in settling for n in nodes):
                return nodes
            if time.monotonic() > deadline:
                states = ", ".join(f"{n.id}={n.state}" for n in nodes) or "no nodes"
                raise TimeoutError(f"pool {pool_id} did not settle within {timeout_s:g} s ({states})")
            time.sleep(poll_interval_s)

    # --------------------------------------------------------------------- jobs

    def create_job(self, job: Any) -> None:
        """Add a job ("Job - Add"); ``job`` is a :class:`~hpcbatch.batch.models.JobSpec` or its JSON."""
        self._request("POST", "/jobs", body=job)

    def get_job(self, job_id: str) -> Job:
        """Return a job ("Job - Get")."""
        return _parse(_models().Job, self.get_job_json(job_id))

    def get_job_json(self, job_id: str) -> Json:
        """:meth:`get_job` as wire JSON."""
        return self._get(f"/jobs/{self._q(job_id)}")

    def list_jobs(self, filter: str | None = None) -> list[Job]:  # noqa: A002
        """Return jobs ("Job - List")."""
        return [_parse(_models().Job, j) for j in self.list_jobs_json(filter)]

    def list_jobs_json(self, filter: str | None = None,
                       select: str | None = None) -> list[Json]:
        """:meth:`list_jobs` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list("/jobs", {"$filter": filter, "$select": select}))

    def update_job(self, job_id: str, patch: Mapping[str, Any]) -> None:
        """Update a job's mutable properties, e.g. ``{"priority": 100}`` ("Job - Patch")."""
        self._request("PATCH", f"/jobs/{self._q(job_id)}", body=patch)

    def terminate_job(self, job_id: str, terminate_reason: str | None = None) -> None:
        """Terminate a job ("Job - Terminate")."""
        body = {"terminateReason": terminate_reason} if terminate_reason else None
        self._request("POST", f"/jobs/{self._q(job_id)}/terminate", body=body)

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its tasks ("Job - Delete")."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}")

    def disable_job(self, job_id: str, disable_tasks: str = "requeue") -> None:
        """Disable a job ("Job - Disable"); ``disable_tasks``: requeue, terminate or wait."""
        self._request("POST", f"/jobs/{self._q(job_id)}/disable",
                      body={"disableTasks": disable_tasks})

    def enable_job(self, job_id: str) -> None:
        """Enable a disabled job ("Job - Enable")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/enable")

    def list_job_preparation_and_release_task_status(
            self, job_id: str, filter: str | None = None,
            select: str | None = None) -> list[dict[str, Any]]:
        """Per node, the job preparation and release task execution info
        ("Job - List Preparation and Release Task Status"; ``$filter``: ``nodeId eq '...'``)."""
        return list(self._list(f"/jobs/{self._q(job_id)}/jobpreparationandreleasetaskstatus",
                               {"$filter": filter, "$select": select}))

    def get_task_counts(self, job_id: str) -> dict[str, int]:
        """Return ``{active, running, completed, succeeded, failed}`` ("Job - Get Task Counts")."""
        return self._request("GET", f"/jobs/{self._q(job_id)}/taskcounts").json()["taskCounts"]

    # ------------------------------------------------------------ job schedules

    def create_job_schedule(self, job_schedule: Any) -> None:
        """Add a job schedule ("Job Schedule - Add"): ``id``, ``schedule``, ``jobSpecification``."""
        self._request("POST", "/jobschedules", body=job_schedule)

    def patch_job_schedule(self, job_schedule_id: str, patch: Mapping[str, Any]) -> None:
        """Change a schedule's ``schedule``, ``jobSpecification`` or ``metadata``
        ("Job Schedule - Patch"); the jobs it creates from now on follow the change."""
        self._request("PATCH", f"/jobschedules/{self._q(job_schedule_id)}", body=patch)

    def update_job_schedule(self, job_schedule_id: str, update: Mapping[str, Any]) -> None:
        """Replace a schedule's ``schedule``, ``jobSpecification`` and ``metadata``
        ("Job Schedule - Update"; the first two are required, absent metadata is removed)."""
        self._request("PUT", f"/jobschedules/{self._q(job_schedule_id)}", body=update)

    def get_job_schedule(self, job_schedule_id: str) -> dict[str, Any]:
        """Return a job schedule ("Job Schedule - Get")."""
        return self._get(f"/jobschedules/{self._q(job_schedule_id)}")

    def list_job_schedules(self, filter: str | None = None,
                           select: str | None = None) -> list[dict[str, Any]]:
        """List job schedules ("Job Schedule - List"), with optional OData ``$filter`` and
        ``$select``."""
        return list(self._list("/jobschedules", {"$filter": filter, "$select": select}))

    def list_jobs_from_schedule(self, job_schedule_id: str) -> list[Job]:
        """List the jobs a schedule created ("Job - List From Job Schedule")."""
        return [_parse(_models().Job, j) for j in self.list_jobs_from_schedule_json(job_schedule_id)]

    def list_jobs_from_schedule_json(self, job_schedule_id: str,
                                     filter: str | None = None,
                                     select: str | None = None) -> list[Json]:
        """:meth:`list_jobs_from_schedule` as wire JSON (OData ``$filter``, ``$select``)."""
        return list(self._list(f"/jobschedules/{self._q(job_schedule_id)}/jobs",
                               {"$filter": filter, "$select": select}))

    def disable_job_schedule(self, job_schedule_id: str) -> None:
        """Disable a job schedule ("Job Schedule - Disable")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/disable")

    def enable_job_schedule(self, job_schedule_id: str) -> None:
        """Enable a job schedule ("Job Schedule - Enable")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/enable")

    def terminate_job_schedule(self, job_schedule_id: str) -> None:
        """Terminate a job schedule and its active job ("Job Schedule - Terminate")."""
        self._request("POST", f"/jobschedules/{self._q(job_schedule_id)}/terminate")

    def delete_job_schedule(self, job_schedule_id: str) -> None:
        """Delete a job schedule and its jobs ("Job Schedule - Delete")."""
        self._request("DELETE", f"/jobschedules/{self._q(job_schedule_id)}")

    # -------------------------------------------------------------------- tasks

    def create_task(self, job_id: str, task: Any) -> str | None:
        """Add one task ("Task - Add"); return its ``ETag`` (for :meth:`wait_task_json`)."""
        resp = self._request("POST", f"/jobs/{self._q(job_id)}/tasks", body=task)
        etag = resp.headers.get("ETag")
        return str(etag).strip('"') if etag else None

    def create_tasks(self, job_id: str, tasks: Iterable[Any], *, max_workers: int = 4,
                     raise_on_error: bool = True) -> list[TaskAddResult]:
        """Add many tasks ("Task - Add Collection"), 100 per request, requests in parallel.

        Parameters
        ----------
        job_id
            The job.
        tasks
            Task specifications (models or JSON); any number.
        max_workers
            Requests sent at once.
        raise_on_error
            Raise :class:`BatchError` naming the first rejected task (after all
            chunks were sent; accepted tasks stay accepted).

        Returns
        -------
        list of TaskAddResult
            One per task, in input order.
        """
        from concurrent.futures import ThreadPoolExecutor

        models = _models()
        items = [_wire(t) for t in tasks]
        per_request = models.MAX_TASKS_PER_COLLECTION
        chunks = [items[i:i + per_request] for i in range(0, len(items), per_request)]
        path = f"/jobs/{self._q(job_id)}/addtaskcollection"

        def send(chunk: list[Any]) -> list[dict[str, Any]]:
            try:
                return self._request("POST", path, body={"value": chunk}).json()["value"]
            except BatchError as exc:  # over Batch's 1 MiB request limit: halve, as Azure's SDKs do
                if exc.code != "RequestBodyTooLarge" or len(chunk) == 1:
                    raise
                half = len(chunk) // 2
                return send(chunk[:half]) + send(chunk[half:])

        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(chunks) or 1))) as pool:
            replies = list(pool.map(send, chunks))
        results = [_parse(models.TaskAddResult, r) for reply in replies for r in reply]
        bad = [r for r in results if r.status != "success"]
        if bad and raise_on_error:
            err = bad[0].error or {}
            raise BatchError(
                f"{len(bad)} of {len(results)} tasks were rejected; first: task "
                f"{bad[0].task_id}: {err.get('message', {}).get('value', err)}",
                code=err.get("code", "TaskAddFailed"), status=400)
        return results

    def get_task(self, job_id: str, task_id: str, select: str | None = None) -> Task:
        """Return a task ("Task - Get"); with ``select``, only the selected properties."""
        return _parse(_models().Task, self.get_task_json(job_id, task_id, select),
                      partial=bool(select))

    def get_task_json(self, job_id: str, task_id: str, select: str | None = None) -> Json:
        """:meth:`get_task` as wire JSON."""
        return self._get(f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}",
                         {"$select": select})

    def wait_task_json(self, job_id: str, task_id: str, etag: str | None,
                       wait_s: float) -> Json | None:
        """Wait until a task differs from the version ``etag`` names; return it, or None.

        A long poll (hpcbatch extension of "Task - Get": ``If-None-Match`` with
        ``Prefer: wait=N``): the service answers as soon as the task's ETag
        changes (its state, its execution information), or after ``wait_s``.

        Parameters
        ----------
        job_id, task_id
            The task.
        etag
            The ETag of the version the caller has; None returns the task at once.
        wait_s
            Seconds the service waits at most (it caps them at 60).

        Returns
        -------
        dict or None
            The task's wire JSON, or None when it still has ``etag`` after ``wait_s``.

        Raises
        ------
        BatchError
            ``TaskNotFound``, ``JobNotFound``.
        """
        path = f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}"
        if etag is None:
            return self._get(path)
        resp = self._request("GET", path, headers={"If-None-Match": f'"{etag}"',
                                                   "Prefer": f"wait={wait_s:g}"})
        if resp.status == 304:
            return None
        data: Json = resp.json()
        data.pop("odata.metadata", None)
        return data

    def list_tasks(self, job_id: str, filter: str | None = None,  # noqa: A002
                   select: str | None = None, max_results: int | None = None) -> list[Task]:
        """Return a job's tasks ("Task - List"), with OData ``$filter`` and ``$select``.

        With ``select``, the returned models hold only the selected properties.
        """
        return [_parse(_models().Task, t, partial=bool(select))
                for t in self.list_tasks_json(job_id, filter, select, max_results)]

    def list_tasks_json(self, job_id: str, filter: str | None = None,  # noqa: A002
                        select: str | None = None, max_results: int | None = None) -> list[Json]:
        """:meth:`list_tasks` as wire JSON (with ``select``, only the selected properties)."""
        params = {"$filter": filter, "$select": select, "maxresults": max_results}
        return list(self._list(f"/jobs/{self._q(job_id)}/tasks", params))

    def update_task(self, job_id: str, task_id: str,
                    constraints: Mapping[str, Any] | None = None) -> None:
        """Replace a task's constraints ("Task - Update"), e.g.
        ``{"maxTaskRetryCount": 3, "retentionTime": "P1D"}``; None gives the defaults."""
        body = {"constraints": dict(constraints)} if constraints is not None else {}
        self._request("PUT", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}", body=body)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        """Terminate a task ("Task - Terminate")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/terminate")

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        """Reactivate a failed task ("Task - Reactivate")."""
        self._request("POST", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/reactivate")

    def delete_task(self, job_id: str, task_id: str) -> None:
        """Delete a task ("Task - Delete")."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}")

    def list_task_files(self, job_id: str, task_id: str, recursive: bool = False) -> list[NodeFile]:
        """List files of a task's directory ("File - List From Task")."""
        return [_parse(_models().NodeFile, f)
                for f in self.list_task_files_json(job_id, task_id, recursive)]

    def list_task_files_json(self, job_id: str, task_id: str, recursive: bool = False,
                             filter: str | None = None) -> list[Json]:
        """:meth:`list_task_files` as wire JSON (``$filter``: ``startswith(name, '...')``)."""
        path = f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files"
        return list(self._list(path, {"recursive": str(recursive).lower(), "$filter": filter}))

    def download_task_file(self, job_id: str, task_id: str, file_path: str,
                           destination: str | Path | None = None, *,
                           offset_bytes: int = 0) -> bytes:
        """Download a file of a task ("File - Get From Task"), e.g. ``stdout.txt``.

        Parameters
        ----------
        file_path
            Path relative to the task directory (``stdout.txt``, ``wd/out.csv``).
        destination
            When given, the bytes are also written to this local path.
        offset_bytes
            First byte to return (``ocp-range: bytes={offset_bytes}-``): to read
            what a running task appended since the last read.

        Returns
        -------
        bytes
            The file's content (from ``offset_bytes`` on).
        """
        path = (f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files/"
                f"{quote(file_path, safe='/')}")
        headers = {"ocp-range": f"bytes={offset_bytes}-"} if offset_bytes else None
        return self._download(path, destination, headers)

    def list_subtasks(self, job_id: str, task_id: str) -> list[SubtaskInformation]:
        """List the subtasks of a multi-instance task ("Task - List Subtasks")."""
        return [_parse(_models().SubtaskInformation, s)
                for s in self.list_subtasks_json(job_id, task_id)]

    def list_subtasks_json(self, job_id: str, task_id: str,
                           select: str | None = None) -> list[Json]:
        """:meth:`list_subtasks` as wire JSON (with ``select``, the ``$select``-ed properties)."""
        return list(self._list(f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/subtasksinfo",
                               {"$select": select}))

    def list_node_files(self, pool_id: str, node_id: str, recursive: bool = False) -> list[NodeFile]:
        """List files under a node's root dir ("File - List From Compute Node")."""
        return [_parse(_models().NodeFile, f)
                for f in self.list_node_files_json(pool_id, node_id, recursive)]

    def list_node_files_json(self, pool_id: str, node_id: str, recursive: bool = False,
                             filter: str | None = None) -> list[Json]:
        """:meth:`list_node_files` as wire JSON (``$filter``: ``startswith(name, '...')``)."""
        path = f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files"
        return list(self._list(path, {"recursive": str(recursive).lower(), "$filter": filter}))

    def download_node_file(self, pool_id: str, node_id: str, file_path: str,
                           destination: str | Path | None = None) -> bytes:
        """Download a file of a node, by path relative to its root ("File - Get From Compute Node").

        A subtask's output is at ``workitems/{job}/job-1/{task}/stdout.txt`` on its node
        (``SubtaskInformation.node_info.task_root_directory``).
        """
        path = (f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files/"
                f"{quote(file_path, safe='/')}")
        return self._download(path, destination)

    # ------------------------------------- file delete, node users, certificates

    def delete_task_file(self, job_id: str, task_id: str, file_path: str,
                         recursive: bool = False) -> None:
        """Delete a file or directory of a task's directory ("File - Delete From Task");
        without ``recursive`` a directory must be empty (``DirectoryNotEmpty``)."""
        self._request("DELETE", f"/jobs/{self._q(job_id)}/tasks/{self._q(task_id)}/files/"
                                f"{quote(file_path, safe='/')}",
                      params={"recursive": str(recursive).lower()})

    def delete_node_file(self, pool_id: str, node_id: str, file_path: str,
                         recursive: bool = False) -> None:
        """Delete a file or directory under a node's root ("File - Delete From Compute Node")."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/files/"
                                f"{quote(file_path, safe='/')}",
                      params={"recursive": str(recursive).lower()})

    def add_node_user(self, pool_id: str, node_id: str, user: Mapping[str, Any]) -> None:
        """Add a user to a node ("Compute Node - Add User"); ``user`` is ``ComputeNodeUser``
        JSON (``name``, ``isAdmin``, ``expiryTime``, ``password``, ``sshPublicKey``)."""
        self._request("POST", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users",
                      body=user)

    def update_node_user(self, pool_id: str, node_id: str, user_name: str,
                         update: Mapping[str, Any]) -> None:
        """Replace a node user's ``password``, ``sshPublicKey`` and ``expiryTime``
        ("Compute Node - Update User"; one left out is removed or reset)."""
        self._request("PUT", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users/"
                             f"{self._q(user_name)}", body=update)

    def delete_node_user(self, pool_id: str, node_id: str, user_name: str) -> None:
        """Delete a user added to a node ("Compute Node - Delete User")."""
        self._request("DELETE", f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}/users/"
                                f"{self._q(user_name)}")

    def get_remote_login_settings(self, pool_id: str, node_id: str) -> Json:
        """A node's SSH address and port ("Compute Node - Get Remote Login Settings")."""
        return self._get(f"/pools/{self._q(pool_id)}/nodes/{self._q(node_id)}"
                         "/remoteloginsettings")

    @staticmethod
    def _certificate(algorithm: str, thumbprint: str) -> str:
        return f"/certificates(thumbprintAlgorithm={algorithm},thumbprint={thumbprint})"

    def add_certificate(self, certificate: Mapping[str, Any]) -> None:
        """Add a certificate ("Certificate - Add"): ``thumbprint``, ``thumbprintAlgorithm``,
        ``data`` (base64), ``certificateFormat`` (``pfx``/``cer``), ``password``."""
        self._request("POST", "/certificates", body=certificate)

    def list_certificates_json(self, filter: str | None = None,  # noqa: A002
                               select: str | None = None) -> list[Json]:
        """The account's certificates ("Certificate - List"), as wire JSON, optionally
        narrowed by an OData ``$filter`` and ``$select``."""
        return list(self._list("/certificates", {"$filter": filter, "$select": select}))

    def get_certificate_json(self, algorithm: str, thumbprint: str) -> Json:
        """One certificate ("Certificate - Get"), as wire JSON."""
        return self._get(self._certificate(algorithm, thumbprint))

    def delete_certificate(self, algorithm: str, thumbprint: str) -> None:
        """Delete a certificate ("Certificate - Delete"; ``deletefailed`` while pools use it)."""
        self._request("DELETE", self._certificate(algorithm, thumbprint))

    def cancel_certificate_deletion(self, algorithm: str, thumbprint: str) -> None:
        """Make a ``deletefailed`` certificate active again ("Certificate - Cancel Deletion")."""
        self._request("POST", self._certificate(algorithm, thumbprint) + "/canceldelete")

    def _download(self, path: str, destination: str | Path | None,
                  headers: Mapping[str, str] | None = None) -> bytes:
        """GET a file's bytes; also write them to ``destination`` when given."""
        data = self._request("GET", path, headers=headers).content
        if destination is not None:
            Path(destination).write_bytes(data)
        return data

    def wait_for_tasks(self, job_id: str, timeout_s: float = 3600.0, poll_interval_s: float = 0.2,
                       progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        """Wait until every task of a job has completed.

        Parameters
        ----------
        progress
            Called with the task counts after every poll (for progress bars).

        Returns
        -------
        dict
            Final task counts (``succeeded``, ``failed`` ...).

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds, naming the counts.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.get_task_counts(job_id)
            if progress:
                progress(counts)
            if counts["active"] == 0 and counts["running"] == 0:
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: tasks still not complete after {timeout_s:g} s: "
                                   f"{counts}")
            time.sleep(poll_interval_s)
