"""Pool trust: the SSH key a pool's nodes use to reach each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    pass



def pool_ssh_key(pool_id: str) -> tuple[str, str]:
    """Generate the SSH key a pool's nodes use to reach each other (inter-node trust).

    Parameters
    ----------
    pool_id
        The pool; named in the public key's comment (``hpcbatch-pool-{id}``).

    Returns
    -------
    (str, str)
        The private key (OpenSSH PEM) and the ``authorized_keys`` line.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} hpcbatch-pool-{pool_id}"
