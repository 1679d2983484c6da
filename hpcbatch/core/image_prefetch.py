"""The prefetch of a pool's container images on a node that starts, as the service sees it.

Batch pulls the images a pool's ``containerConfiguration`` names
(``containerImageNames``) on every node as it starts, before its start task
("Run container workloads on Azure Batch": prefetch container images); a node
whose image cannot be pulled becomes ``unusable`` with ``ContainerInvalidImage``.
The node agent pulls (:func:`hpcbatch.execution.images.pull_images`); this module
asks it and reads its answer as an untrusted peer's (:func:`prefetch_failure`).
The pool manager applies the outcome to the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcbatch.batch.models import check_container_configuration
from hpcbatch.core.node_runtime import NodeRuntime

PREFETCH_MESSAGE_CHARS = 1000
"""Most of a node's account of a failed image pull kept in its error (a node is untrusted)."""


@dataclass(frozen=True)
class PrefetchFailure:
    """Why a node could not prefetch its pool's images: its ``ComputeNodeError``.

    Attributes
    ----------
    code
        ``ContainerInvalidImage``, ``ContainerRuntimeNotFound`` or ``NodeStartFailed``.
    message
        The error's sentence, naming the node and its host.
    details
        ``errorDetails`` after the host: ``ContainerImage`` (when known) and ``Message``
        (the node's words).
    """

    code: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)


def prefetch_failure(answer: object, images: Sequence[str]) -> tuple[str, str, str | None] | None:
    """Read a node's answer to ``pull_images``: None when every image was pulled, else
    ``(code, message, image)``.

    A node is an untrusted peer: the code is one of ``ContainerInvalidImage``,
    ``ContainerRuntimeNotFound`` and ``NodeStartFailed`` (an answer that is not a
    mapping) whatever the node says, the image one of ``images`` or None, and the
    message at most :data:`PREFETCH_MESSAGE_CHARS` long.

    Parameters
    ----------
    answer
        What the node answered (:func:`hpcbatch.execution.images.pull_images`).
    images
        The images it was asked to pull.
    """
    if not isinstance(answer, Mapping):
        return "NodeStartFailed", f"unexpected answer {answer!r}"[:PREFETCH_MESSAGE_CHARS], None
    if "pulled" in answer:
        return None
    code = str(answer.get("code"))
    if code not in ("NodeStartFailed", "ContainerRuntimeNotFound"):
        code = "ContainerInvalidImage"
    said = str(answer.get("message") or "")[:PREFETCH_MESSAGE_CHARS]
    image = answer.get("image")
    return code, said, image if isinstance(image, str) and image in images else None


async def prefetch(engine: Any, vm_config: Mapping[str, Any] | None,
                   node: NodeRuntime) -> PrefetchFailure | None:
    """Have a started node pull its pool's ``containerImageNames`` (one agent call).

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
        None when the pool names no image or every image was pulled.
    """
    cc = check_container_configuration(dict(vm_config) if vm_config else None) or {}
    images = list(cc.get("containerImageNames") or [])
    if not images:
        return None
    try:
        answer = await engine.call(node.worker or "", "pull_images",
                                   container_type=cc.get("type"), images=images)
    except Exception as exc:  # noqa: BLE001 - the node cannot be asked: it failed to start
        answer = {"code": "NodeStartFailed", "message": str(exc)}
    failure = prefetch_failure(answer, images)
    if failure is None:
        return None
    code, said, image = failure
    where = f"node {node.node_id} (host {node.host.name})"
    if code == "NodeStartFailed":
        return PrefetchFailure(code, f"host {node.host.name}: the pool's container images "
                                     f"could not be prefetched: {said}")
    if code == "ContainerInvalidImage":
        message = (f"One or more container images specified are invalid: {where} could not "
                   f"pull {image}")
    else:
        message = f"{where}: {said}"
    return PrefetchFailure(code, message, {**({"ContainerImage": image} if image else {}),
                                           "Message": said})
