"""Installing a pool's certificates on a node, in ``AZ_BATCH_CERTIFICATES_DIR``.

Runs in the node agent (called through :data:`hpcbatch.execution.nodeops.NODE_CALLS`)
when the node starts, before its start task. As Batch does on Linux nodes, the folder
(``{root}/certs``, :data:`CERTS_DIR`) holds, per certificate ``{alg}-{thumbprint}``:

* ``.cer``: the certificate as added (a ``cer`` certificate);
* ``.pfx``: the PKCS #12 file as added, and ``.pem``: its certificate (and chain) and
  its private key, unencrypted, in PEM (converted with ``cryptography``).

The folder holds exactly the pool's certificates: files of certificates the pool no
longer references are removed. It is mode 0750 and its files 0640; when the agent runs
as root, their group is the pool's auto-user's (``_azbatch``), so tasks of the default
identity read them and other host users do not.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcbatch.batch.identity import POOL_AUTO_USER

CERTS_DIR = "certs"
"""``AZ_BATCH_CERTIFICATES_DIR`` relative to the node root."""


def pfx_to_pem(data: bytes, password: str | None) -> bytes:
    """Convert a PKCS #12 file to PEM: the certificate, its chain, then the private key.

    Raises
    ------
    ValueError
        The data cannot be read with ``password``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    key, cert, chain = pkcs12.load_key_and_certificates(
        data, password.encode() if password else None)
    out = b""
    for c in [cert, *(chain or [])]:
        if c is not None:
            out += c.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        out += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return out


def _group() -> int | None:
    """The auto-user's group id when the agent runs as root and it exists, else None."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam(POOL_AUTO_USER).gr_gid
    except KeyError:
        return None


def _write(path: Path, data: bytes, gid: int | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if gid is not None:
        os.chown(tmp, -1, gid)
    os.chmod(tmp, 0o640)
    tmp.replace(path)


def install(root_dir: str, certs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Write a pool's certificates into the node's certificates folder.

    Parameters
    ----------
    root_dir
        The node root.
    certs
        ``{"name": "sha1-<thumbprint>", "format": "cer"|"pfx", "data": bytes,
        "password": str|None}`` per certificate.

    Returns
    -------
    list of str
        The file names now in the folder, sorted.

    Raises
    ------
    ValueError
        A name that is not ``{alg}-{hex}``, or a pfx that cannot be read.
    """
    folder = Path(root_dir, CERTS_DIR)
    if folder.is_symlink():
        folder.unlink()
    folder.mkdir(mode=0o750, exist_ok=True)
    gid = _group()
    if gid is not None:
        os.chown(folder, -1, gid)
    folder.chmod(0o750)
    wanted: set[str] = set()
    for cert in certs:
        name = str(cert["name"])
        alg, _, thumb = name.partition("-")
        if not alg.isalnum() or not thumb or any(c not in "0123456789abcdef" for c in thumb):
            raise ValueError(f"not a certificate name: {name!r}")
        data = bytes(cert["data"])
        if cert["format"] == "cer":
            files = {f"{name}.cer": data}
        else:
            files = {f"{name}.pfx": data, f"{name}.pem": pfx_to_pem(data, cert.get("password"))}
        for fname, content in files.items():
            _write(folder / fname, content, gid)
            wanted.add(fname)
    for path in folder.iterdir():
        if path.name not in wanted:
            path.unlink()
    return sorted(wanted)
