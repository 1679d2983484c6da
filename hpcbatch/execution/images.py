"""Container images on a node: registry logins and the prefetch of a pool's ``containerImageNames``.

Batch pulls the images a pool's ``containerConfiguration`` names on every node
as it starts, before its start task ("Run container workloads on Azure Batch":
prefetch container images), once logged in to the private registries it lists
(``containerRegistries``); a node whose image cannot be pulled becomes
``unusable`` with error ``ContainerInvalidImage``, one that cannot log in with
``ContainerRegistryLoginFailed``. A task's ``containerSettings.registry`` is
logged in to, and its image pulled, before the task runs. Here the node agent
runs the pool's container runtime (found on the node's task ``PATH``, as a
container task finds it: :func:`hpcbatch.execution.containers.find_runtime`)
with an argv (no shell), the password on its standard input only, and reports
the first failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from hpcbatch.batch.models import DEFAULT_REGISTRY_SERVER
from hpcbatch.execution import containers

LOGIN_TIMEOUT_S = 120.0
"""Longest one registry login may take before the node gives up on it."""

PULL_TIMEOUT_S = 1800.0
"""Longest one image's pull may take before the node gives up on it."""

MESSAGE_CHARS = 400
"""How much of the runtime's last output a failure's message carries."""


def login_argv(runtime: str, registry: Mapping[str, Any]) -> list[str]:
    """The argv that logs ``runtime`` in to a registry; the password is not in it.

    ``docker login``, ``podman login`` and ``nerdctl login`` all take ``--username``,
    ``--password-stdin`` (the password is read from standard input) and the server
    as their one argument, after ``--`` so that it is never read as an option.

    Parameters
    ----------
    runtime
        Path of the runtime program (:func:`hpcbatch.execution.containers.find_runtime`).
    registry
        A ``ContainerRegistry`` wire dict (``registryServer``, default ``docker.io``;
        ``userName``), checked by :class:`hpcbatch.batch.models.ContainerRegistry`.

    Returns
    -------
    list of str
        ``[runtime, "login", "--username", USER, "--password-stdin", "--", SERVER]``.
    """
    return [runtime, "login", "--username", str(registry.get("userName") or ""),
            "--password-stdin", "--", registry_server(registry)]


def registry_server(registry: Mapping[str, Any]) -> str:
    """A ``ContainerRegistry`` wire dict's ``registryServer``, or Batch's default ``docker.io``."""
    return str(registry.get("registryServer") or DEFAULT_REGISTRY_SERVER)


def registry_fingerprint(registry: Mapping[str, Any]) -> str:
    """A digest of a ``ContainerRegistry`` wire dict (server, user and password): equal for
    the same credentials, so that an agent can tell it logged in with them already
    without keeping the password (SHA-256 of the dict's canonical JSON)."""
    canonical = json.dumps({"registryServer": registry_server(registry),
                            "userName": registry.get("userName"),
                            "password": registry.get("password")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def hide_password(text: str, registries: Sequence[Mapping[str, Any]]) -> str:
    """``text`` (a runtime's words, a node's message) with every registry password replaced
    by ``***``: the runtime's last words go into errors, the password never does."""
    for registry in registries:
        password = registry.get("password")
        if isinstance(password, str) and password:
            text = text.replace(password, "***")
    return text


def login(runtime: str, registry: Mapping[str, Any],
          env: Mapping[str, str]) -> dict[str, Any] | None:
    """Log ``runtime`` in to one registry (``<runtime> login``, password on stdin).

    The runtime keeps the login where it keeps its own (docker and nerdctl:
    ``$DOCKER_CONFIG/config.json``, by default ``~/.docker/config.json`` of the
    node agent's user, or its credential helper; podman: its ``auth.json``), for
    the pulls that follow.

    Parameters
    ----------
    runtime
        Path of the runtime program.
    registry
        A ``ContainerRegistry`` wire dict with ``userName`` and ``password``.
    env
        The environment the runtime runs with (the node's task environment).

    Returns
    -------
    dict or None
        None when logged in; else ``{"code": "ContainerRegistryLoginFailed",
        "server", "message"}``, the message with the runtime's exit code and last
        output (never the password).
    """
    server = registry_server(registry)
    password = str(registry.get("password") or "")
    try:
        proc = subprocess.run(login_argv(runtime, registry), env=dict(env),
                              input=(password + "\n").encode(), capture_output=True,
                              timeout=LOGIN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        said = f"did not finish within {LOGIN_TIMEOUT_S:g} s"
    except OSError as exc:
        said = f"could not start: {exc}"
    else:
        if proc.returncode == 0:
            return None
        words = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        said = (f"exited with code {proc.returncode}: "
                f"{words[-MESSAGE_CHARS:] or '(no output)'}")
    return {"code": "ContainerRegistryLoginFailed", "server": server,
            "message": hide_password(f"{runtime} login {server} as "
                                     f"{registry.get('userName')} {said}", [registry])}


def pull_images(container_type: str | None, images: Sequence[str],
                env: Mapping[bytes, bytes],
                registries: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Log in to each registry, then pull each image, with the pool's container runtime;
    stop at the first failure.

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
    registries
        ``ContainerRegistry`` wire dicts to log in to first (:func:`login`): the
        pool's ``containerRegistries``, or a task's ``containerSettings.registry``.

    Returns
    -------
    dict
        ``{"pulled": [image, ...]}`` when every login and pull succeeded; else
        ``{"code", "message", "image"}``: ``ContainerRuntimeNotFound`` (no
        runtime on the ``PATH``; ``image`` None), ``ContainerRegistryLoginFailed``
        (``server`` could not be logged in to; ``image`` None) or
        ``ContainerInvalidImage`` (the runtime could not pull ``image``: its exit
        code and last output in the message). No message holds a password.
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
    for registry in registries:
        failed = login(runtime, registry, run_env)
        if failed is not None:
            return {**failed, "image": None}
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
                    "message": hide_password(
                        f"{runtime} pull {image} exited with code {proc.returncode}: "
                        f"{said[-MESSAGE_CHARS:] or '(no output)'}", registries)}
        pulled.append(image)
    return {"pulled": pulled}
