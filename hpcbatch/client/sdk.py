"""The Python SDK: :class:`BatchClient`, a client of the Batch REST API.

Method names follow today's azure-batch SDK (``create_pool``, ``list_tasks``,
``download_task_file`` ...). Arguments are the wire models of
:mod:`hpcbatch.batch.models` or plain dicts in Batch's JSON; results are models.
Each read that returns models has a ``*_json`` sibling (``list_tasks_json``,
``get_pool_json`` ...) returning the wire JSON as the service sent it, without
building models: what the CLI prints.

:class:`BatchClient` joins the signed transport (:class:`~hpcbatch.client.rest.RestClient`:
SharedKey or token, errors as :class:`BatchError`, paging) with the operations of each
group of resources (:mod:`hpcbatch.client.operations`: account, pools and nodes, jobs
and job schedules, tasks); this module is where users import it from.

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

from hpcbatch.client.operations.account import AccountOperations
from hpcbatch.client.operations.jobs import JobOperations
from hpcbatch.client.operations.pools import PoolOperations
from hpcbatch.client.operations.tasks import TaskOperations
from hpcbatch.client.rest import API_VERSION, USER_AGENT, BatchError, Json, RestClient

__all__ = ["API_VERSION", "USER_AGENT", "BatchClient", "BatchError", "Json", "RestClient"]


class BatchClient(AccountOperations, PoolOperations, JobOperations, TaskOperations):
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

    def __repr__(self) -> str:  # never show the key
        return f"BatchClient(endpoint={self.endpoint!r}, account={self.account!r})"
