"""Pool trust: the SSH key a pool's nodes use to reach each other.

A pool with inter-node communication gets its own key pair
(:func:`pool_ssh_key`); a provider that uses SSH installs the public key in
each host's ``~/.ssh/authorized_keys`` (:func:`authorize_argv`) and removes
it again when the pool is deleted (:func:`revoke_argv`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

__all__ = ["POOL_KEY_FILE", "authorize_argv", "pool_ssh_key", "revoke_argv"]

POOL_KEY_FILE = "ssh/id_pool"
"""The pool's private key file, relative to a node root."""

_AUTHORIZE = ('umask 077; mkdir -p "$HOME/.ssh"; f="$HOME/.ssh/authorized_keys"; touch "$f"; '
              'grep -qxF "$1" "$f" || printf "%s\n" "$1" >> "$f"')
_REVOKE = ('f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; '
           'grep -vxF "$1" "$f" > "$f.hpcbatch"; cat "$f.hpcbatch" > "$f"; rm -f "$f.hpcbatch"')


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


def authorize_argv(public_key: str) -> list[str]:
    """Return the argv that adds ``public_key`` to the host user's ``~/.ssh/authorized_keys``.

    Idempotent: a line already present is not added twice; the folder and
    file are created with owner-only permissions.

    Parameters
    ----------
    public_key
        The ``authorized_keys`` line (from :func:`pool_ssh_key`).

    Returns
    -------
    list of str
        ``["sh", "-c", script, "sh", public_key]``.
    """
    return ["sh", "-c", _AUTHORIZE, "sh", public_key]


def revoke_argv(public_key: str) -> list[str]:
    """Return the argv that removes ``public_key`` from ``~/.ssh/authorized_keys``.

    Every other line is kept; a missing file is not an error.

    Parameters
    ----------
    public_key
        The ``authorized_keys`` line to remove.

    Returns
    -------
    list of str
        ``["sh", "-c", script, "sh", public_key]``.
    """
    return ["sh", "-c", _REVOKE, "sh", public_key]
