"""Container images on a node: the prefetch of a pool's ``containerImageNames``.

Batch pulls the images a pool's ``containerConfiguration`` names on every node
as it starts, before its start task ("Run container workloads on Azure Batch":
prefetch container images); a node whose image cannot be pulled becomes
``unusable`` with error ``ContainerInvalidImage``. Here the node agent runs the
pool's container runtime (found on the task ``PATH``, as a container task finds
it: :func:`hpcbatch.execution.containers.find_runtime`) once per image, with an
argv (no shell), and reports the first failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from hpcbatch.execution import containers

PULL_TIMEOUT_S = 1800.0
"""Longest one image's pull may take before the node gives up on it."""

MESSAGE_CHARS = 400
"""How much of the runtime's last output a failure's message carries."""


def pull_images(container_type: str | None, images: Sequence[str],
                env: Mapping[bytes, bytes]) -> dict[str, Any]:
    """Pull each image with the pool's container runtime; stop at the first failure.

    Parameters
    ----------
    container_type
        The pool's ``containerConfiguration.type`` (``dockerCompatible`` or
        ``criCompatible``): which runtimes are looked for.
    images
        Full image references, as given to ``docker pull``.
    env
        The task environment of the node (its ``PATH`` finds the runtime; the
        runtime runs with it).

    Returns
    -------
    dict
        ``{"pulled": [image, ...]}`` when every image was pulled; else
        ``{"code", "message", "image"}``: ``ContainerRuntimeNotFound`` (no
        runtime on the ``PATH``; ``image`` None) or ``ContainerInvalidImage``
        (the runtime could not pull ``image``: its exit code and last output
        in the message).
    """
    path = os.fsdecode(env.get(b"PATH", b""))
    runtime = containers.find_runtime(container_type, path)
    if runtime is None:
        names = ", ".join(containers.runtime_names(container_type))
        return {"code": "ContainerRuntimeNotFound", "image": None,
                "message": f"No container runtime for containerConfiguration type "
                           f"{container_type} to prefetch the pool's containerImageNames: "
                           f"looked for {names} on PATH {path!r}"}
    run_env = {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()}
    pulled: list[str] = []
    for image in images:
        try:
            proc = subprocess.run([runtime, "pull", "--", image], env=run_env,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=PULL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return {"code": "ContainerInvalidImage", "image": image,
                    "message": f"{runtime} pull {image} did not finish within "
                               f"{PULL_TIMEOUT_S:g} s"}
        except OSError as exc:
            return {"code": "ContainerInvalidImage", "image": image,
                    "message": f"{runtime} pull {image} could not start: {exc}"}
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            return {"code": "ContainerInvalidImage", "image": image,
                    "message": f"{runtime} pull {image} exited with code {proc.returncode}: "
                               f"{said[-MESSAGE_CHARS:] or '(no output)'}"}
        pulled.append(image)
    return {"pulled": pulled}
