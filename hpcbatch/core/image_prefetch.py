"""The prefetch of a pool's container images on a node that starts, as the service sees it.

Batch pulls the images a pool's ``containerConfiguration`` names
(``containerImageNames``) on every node as it starts, before its start task
("Run container workloads on Azure Batch": prefetch container images), logged in
to the private registries it lists (``containerRegistries``); a node whose image
cannot be pulled becomes ``unusable`` with ``ContainerInvalidImage``, one that
cannot log in to a registry with ``ContainerRegistryLoginFailed`` (Batch documents
no code of its own for a failed login). The node agent logs in and pulls
(:func:`hpcbatch.execution.images.pull_images`); this module asks it and reads
its answer as an untrusted peer's (:func:`prefetch_failure`). The pool manager
applies the outcome to the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcbatch.batch.models import check_container_configuration, container_registries
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.execution.images import hide_password, registry_server

PREFETCH_MESSAGE_CHARS = 1000
"""Most of a node's account of a failed image pull kept in its error (a node is untrusted)."""


@dataclass(frozen=True)
class PrefetchFailure:
    """Why a node could not prefetch its pool's images: its ``ComputeNodeError``.

    Attributes
    ----------
    code
        ``ContainerInvalidImage``, ``ContainerRegistryLoginFailed``,
        ``ContainerRuntimeNotFound`` or ``NodeStartFailed``.
    message
        The error's sentence, naming the node and its host.
    details
        ``errorDetails`` after the host: ``ContainerImage`` or ``ContainerRegistry``
        (when known) and ``Message`` (the node's words, never a registry password).
    """

    code: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)


FAILURE_CODES = ("ContainerInvalidImage", "ContainerRegistryLoginFailed",
                 "ContainerRuntimeNotFound", "NodeStartFailed")
"""The codes a node's prefetch can fail with; any other code a node gives reads as the first."""


def prefetch_failure(answer: object, images: Sequence[str], servers: Sequence[str] = (),
                     ) -> tuple[str, str, str | None] | None:
    """Read a node's answer to ``pull_images``: None when every login and pull succeeded,
    else ``(code, message, subject)``.

    A node is an untrusted peer: the code is one of :data:`FAILURE_CODES`
    (``NodeStartFailed`` for an answer that is not a mapping) whatever the node
    says, the subject one of ``images`` (``ContainerInvalidImage``) or of ``servers``
    (``ContainerRegistryLoginFailed``) or None, and the message at most
    :data:`PREFETCH_MESSAGE_CHARS` long.

    Parameters
    ----------
    answer
        What the node answered (:func:`hpcbatch.execution.images.pull_images`).
    images
        The images it was asked to pull.
    servers
        The registry servers it was asked to log in to.
    """
    if not isinstance(answer, Mapping):
        return "NodeStartFailed", f"unexpected answer {answer!r}"[:PREFETCH_MESSAGE_CHARS], None
    if "pulled" in answer:
        return None
    code = str(answer.get("code"))
    if code not in FAILURE_CODES:
        code = FAILURE_CODES[0]
    said = str(answer.get("message") or "")[:PREFETCH_MESSAGE_CHARS]
    subject, known = ((answer.get("server"), servers) if code == "ContainerRegistryLoginFailed"
                      else (answer.get("image"), images))
    return code, said, subject if isinstance(subject, str) and subject in known else None


async def prefetch(engine: Any, vm_config: Mapping[str, Any] | None,
                   node: NodeRuntime) -> PrefetchFailure | None:
    """Have a started node log in to its pool's ``containerRegistries`` and pull its
    ``containerImageNames`` (one agent call, ``pull_images``).

    Parameters
    ----------
    engine
        The execution engine (:meth:`hpcbatch.execution.engine.DaskEngine.call`).
    vm_config
        The pool's ``virtualMachineConfiguration`` wire dict, or None.
    node
        The node, its worker connected.

    Returns
    -------
    PrefetchFailure or None
        None when the pool names no image and no registry, or every login and pull
        succeeded.
    """
    cc = check_container_configuration(dict(vm_config) if vm_config else None) or {}
    images = list(cc.get("containerImageNames") or [])
    registries = [r.to_wire() for r in container_registries(cc)]
    if not images and not registries:
        return None
    try:
        answer = await engine.call(node.worker or "", "pull_images",
                                   container_type=cc.get("type"), images=images,
                                   registries=registries)
    except Exception as exc:  # noqa: BLE001 - the node cannot be asked: it failed to start
        answer = {"code": "NodeStartFailed", "message": str(exc)}
    failure = prefetch_failure(answer, images, [registry_server(r) for r in registries])
    if failure is None:
        return None
    code, said, subject = failure
    said = hide_password(said, registries)
    where = f"node {node.node_id} (host {node.host.name})"
    if code == "NodeStartFailed":
        return PrefetchFailure(code, f"host {node.host.name}: the pool's container images "
                                     f"could not be prefetched: {said}")
    detail: dict[str, str] = {}
    if code == "ContainerInvalidImage":
        message = (f"One or more container images specified are invalid: {where} could not "
                   f"pull {subject}")
        detail = {"ContainerImage": subject} if subject else {}
    elif code == "ContainerRegistryLoginFailed":
        message = (f"The login to a container registry of the pool failed: {where} could not "
                   f"log in to {subject or 'a registry'}")
        detail = {"ContainerRegistry": subject} if subject else {}
    else:
        message = f"{where}: {said}"
    return PrefetchFailure(code, message, {**detail, "Message": said})
