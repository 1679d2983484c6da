"""Images and node agent SKUs from what the inventory's hosts run ("Account - List
Supported Images", "Account - List Node Agent SKUs"). Pure: no I/O.

Batch lists the marketplace images its node agent supports; hpcbatch's nodes are the
inventory's hosts, so it lists the operating systems those hosts run, read from their
``/etc/os-release``, in Batch's shapes: an ``imageReference`` (publisher, offer, sku,
``version: latest``) and a ``nodeAgentSKUId`` (``batch.node.ubuntu 22.04``), with
``verificationType: verified`` (hpcbatch runs on them), so the samples' "pick the
latest verified Ubuntu image" helpers find what the hosts offer.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["describe", "image_for", "node_agent_skus", "parse_os_release", "serves",
           "supported_images", "wanted_image"]

_UBUNTU_OFFERS = {
    "20.04": ("0001-com-ubuntu-server-focal", "20_04-lts"),
    "22.04": ("0001-com-ubuntu-server-jammy", "22_04-lts"),
    "24.04": ("ubuntu-24_04-lts", "server"),
}
"""Canonical's marketplace offer and sku of each Ubuntu LTS, as Batch lists them."""


def parse_os_release(text: str) -> dict[str, str]:
    """Parse an ``os-release`` file (``KEY=value`` lines, shell quoting).

    Parameters
    ----------
    text
        The file's content.

    Returns
    -------
    dict
        ``{"ID": "ubuntu", "VERSION_ID": "22.04", ...}``; malformed lines are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        out[key] = parts[0] if parts else ""
    return out


def image_for(release: Mapping[str, str]) -> dict[str, Any] | None:
    """Batch's ``ImageInformation`` for one host's ``os-release``.

    Parameters
    ----------
    release
        From :func:`parse_os_release`.

    Returns
    -------
    dict or None
        ``{"nodeAgentSKUId", "imageReference": {publisher, offer, sku, version},
        "osType": "linux", "capabilities": [], "verificationType": "verified"}``;
        None without ``ID`` and ``VERSION_ID``.
    """
    os_id = release.get("ID", "").strip().lower()
    version = release.get("VERSION_ID", "").strip()
    if not os_id or not version:
        return None
    if os_id == "ubuntu" and version in _UBUNTU_OFFERS:
        publisher, (offer, sku) = "canonical", _UBUNTU_OFFERS[version]
    elif os_id == "debian":
        publisher, offer, sku = "debian", f"debian-{version}", version
    else:
        publisher, offer, sku = os_id, f"{os_id}-{version}", version
    return {"nodeAgentSKUId": f"batch.node.{os_id} {version}",
            "imageReference": {"publisher": publisher, "offer": offer, "sku": sku,
                               "version": "latest"},
            "osType": "linux", "capabilities": [], "verificationType": "verified"}


def supported_images(releases: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """The distinct images of some hosts, sorted by node agent SKU and offer.

    Parameters
    ----------
    releases
        One ``os-release`` mapping per host.

    Returns
    -------
    list of dict
        ``ImageInformation`` items (:func:`image_for`), one per distinct image.
    """
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for release in releases:
        image = image_for(release)
        if image is not None:
            ref = image["imageReference"]
            seen.setdefault((ref["publisher"], ref["offer"], ref["sku"]), image)
    return sorted(seen.values(), key=lambda i: (i["nodeAgentSKUId"],
                                                 i["imageReference"]["offer"]))


def node_agent_skus(images: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Batch's older ``NodeAgentSku`` list: each SKU with its verified image references.

    Parameters
    ----------
    images
        From :func:`supported_images`.

    Returns
    -------
    list of dict
        ``{"id", "verifiedImageReferences": [...], "osType": "linux"}`` per SKU.
    """
    skus: dict[str, dict[str, Any]] = {}
    for image in images:
        sku = skus.setdefault(image["nodeAgentSKUId"], {
            "id": image["nodeAgentSKUId"], "verifiedImageReferences": [], "osType": "linux"})
        sku["verifiedImageReferences"].append(dict(image["imageReference"]))
    return list(skus.values())


def wanted_image(virtual_machine_configuration: Mapping[str, Any] | None
                 ) -> tuple[str, str, str] | None:
    """The marketplace image a pool asks for, as ``(publisher, offer, sku)`` lower-cased.

    Parameters
    ----------
    virtual_machine_configuration
        The pool's ``virtualMachineConfiguration`` (wire JSON), or None.

    Returns
    -------
    tuple or None
        None when the pool names no marketplace image (no configuration, or a
        custom ``virtualMachineImageId``): any host serves it.
    """
    ref = (virtual_machine_configuration or {}).get("imageReference") or {}
    parts = tuple(str(ref.get(k) or "").strip().lower() for k in ("publisher", "offer", "sku"))
    if not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def describe(image: tuple[str, str, str]) -> str:
    """An image as Azure's URN without version: ``publisher:offer:sku``."""
    return ":".join(image)


def serves(image: tuple[str, str, str], release: Mapping[str, str] | None,
           extra: Iterable[str] = ()) -> bool | None:
    """Whether a host serves a pool's image (:func:`wanted_image`).

    Parameters
    ----------
    image
        ``(publisher, offer, sku)``, lower-cased.
    release
        The host's ``os-release`` (:func:`parse_os_release`), or None when not read yet.
    extra
        The host's inventory ``images``: URNs ``publisher:offer:sku[:version]``.

    Returns
    -------
    bool or None
        True when the host's OS maps to the image (:func:`image_for`) or an
        ``extra`` URN names it; False when it does not; None when ``release``
        is unknown and no ``extra`` URN matches (read the host first).
    """
    if any(tuple(p.strip().lower() for p in urn.split(":")[:3]) == image for urn in extra):
        return True
    if release is None:
        return None
    info = image_for(release)
    if info is None:
        return False
    ref = info["imageReference"]
    return (ref["publisher"], ref["offer"], ref["sku"]) == image
