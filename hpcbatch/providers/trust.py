"""Pool trust: the SSH key a pool's nodes use to reach each other.

A pool with inter-node communication gets its own key pair
(:func:`pool_ssh_key`). A provider that uses SSH installs the public key on
each of the pool's hosts, in the ``authorized_keys`` of the user the pool's
tasks log in as (the pool's auto-user when the node switches users, else the
host's login user), as a ``restrict,from="<the pool's node addresses>"`` line
(:func:`authorized_line`, :func:`authorize_argv`), and rewrites that line as
the pool's membership changes. A node leaving the pool loses the line and its
copy of the private key (:func:`revoke_argv`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization

__all__ = ["DEFAULT_KEYS_FILE", "POOL_KEY_FILE", "authorize_argv", "authorized_line",
           "pool_ssh_key", "revoke_argv"]

POOL_KEY_FILE = "ssh/id_pool"
"""The pool's private key file, relative to a node root."""
DEFAULT_KEYS_FILE = "%h/.ssh/authorized_keys"
"""Where a user's authorized keys are (OpenSSH's default ``AuthorizedKeysFile``)."""

_ADDRESS = re.compile(r"[A-Za-z0-9.:_*?%-]+")

# sh script: $1 the authorized_keys line to keep ('' to remove only), $2 the key's base64 body,
# $3 the user ('' = who runs it), $4 the keys file (%h = home, leading). The file is rewritten
# under flock: lines holding the key go, $1 comes.
# With $3 (the pool's auto-user, an account hpcbatch owns) the file is hpcbatch's alone: only
# pool-key lines in the form authorized_line writes are kept, any other line goes. Outside
# the user's home, root keeps the file: root-owned, 0644 (sshd accepts it under StrictModes),
# in a folder root owns (made 0755; one the user owned is taken back), replaced by rename
# (a link planted earlier is replaced, never followed): the user cannot add a key there.
# A file under the user's home is written by the user itself (runuser, see _as): root never
# follows links the user may have planted; the user owns that file (docs/security.md).
# Without $3 (the login user's own file) every other line is kept.
_KEYS = r'''set -e
u=$3
if [ -n "$u" ]; then h=$(getent passwd "$u" | cut -d: -f6); else u=$(id -un); h=$HOME; fi
[ -n "$h" ] || { echo "user $u does not exist" >&2; exit 1; }
case $4 in "%h"*) f=$h${4#%h}; home=1;; *) f=$4; home=;; esac
case $f in *%u*) f=$(printf '%s' "$f" | sed "s/%u/$u/g");; esac
ours='^restrict,from="[A-Za-z0-9.:_*?%,-]+" ssh-ed25519 [A-Za-z0-9+/=]+ hpcbatch-pool-[A-Za-z0-9_-]+$'
if [ -z "$1" ] && [ ! -e "$f" ] && [ ! -L "$f" ]; then exit 0; fi
d=$(dirname -- "$f")
if [ -n "$3" ] && [ -z "$home" ] && [ "$(id -u)" = 0 ]; then
  if [ ! -d "$d" ]; then (umask 022; mkdir -p -- "$d"); fi
  if [ "$(stat -c %u -- "$d")" = "$(id -u "$u")" ]; then chown 0:0 -- "$d"; chmod 755 -- "$d"; fi
  exec 9<"$d"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  t=$(mktemp -- "$d/.hpcbatch-keys.XXXXXX")
  if [ -f "$f" ] && [ ! -L "$f" ]; then
    { grep -E -- "$ours" "$f" || true; } | { grep -vF -- "$2" || true; } > "$t"
  fi
  if [ -n "$1" ]; then printf '%s\n' "$1" >> "$t"; fi
  chmod 644 -- "$t"
  mv -f -- "$t" "$f"
  exit 0
fi
if [ ! -d "$d" ]; then mkdir -p -- "$d"; if [ -n "$home" ]; then chmod 700 "$d"; fi; fi
umask 077
touch -- "$f"
exec 9>>"$f"
if command -v flock >/dev/null 2>&1; then flock 9; fi
t="$f.hpcbatch.$$"
if [ -n "$3" ]; then
  { grep -E -- "$ours" "$f" || true; } | { grep -vF -- "$2" || true; } > "$t"
else
  grep -vF -- "$2" "$f" > "$t" || true
fi
if [ -n "$1" ]; then printf '%s\n' "$1" >> "$t"; fi
cat -- "$t" > "$f"
rm -f -- "$t"
'''


def pool_ssh_key(pool_id: str) -> tuple[str, str]:
    """Generate the SSH key a pool's nodes use to reach each other (inter-node trust).

    Parameters
    ----------
    pool_id
        The pool; named in the public key's comment (``hpcbatch-pool-{id}``).

    Returns
    -------
    (str, str)
        The private key (OpenSSH PEM) and the public key line
        (``ssh-ed25519 BASE64 hpcbatch-pool-{id}``).
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} hpcbatch-pool-{pool_id}"


def authorized_line(public_key: str, allowed_from: Iterable[str]) -> str:
    """Return the ``authorized_keys`` line of a pool key: ``restrict,from="a,b" KEY``.

    ``restrict`` turns off port, agent and X11 forwarding and ptys; ``from=``
    accepts the key only from the pool's node addresses.

    Parameters
    ----------
    public_key
        The public key line (:func:`pool_ssh_key`).
    allowed_from
        Addresses (or sshd patterns) of the pool's nodes; at least one.

    Returns
    -------
    str
        The line.

    Raises
    ------
    ValueError
        No address, or one that is not an address or host pattern.
    """
    addresses = sorted(set(allowed_from))
    if not addresses:
        raise ValueError("a pool key needs at least one node address for from=")
    for a in addresses:
        if not _ADDRESS.fullmatch(a):
            raise ValueError(f"{a!r} is not a host address for an authorized_keys from= option")
    return f'restrict,from="{",".join(addresses)}" {public_key}'


def _body(public_key: str) -> str:
    parts = public_key.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    return parts[1]


def _keys_file(keys_file: str | None, user: str | None) -> str:
    path = keys_file or DEFAULT_KEYS_FILE
    return path.replace("%u", user) if user else path


def _as(user: str | None, keys_file: str, argv: list[str]) -> list[str]:
    """Run ``argv`` as ``user`` when the keys file is in that user's home (``%h``)."""
    if user and keys_file.startswith("%h"):
        return ["runuser", "-u", user, "--", *argv]
    return argv


def authorize_argv(public_key: str, allowed_from: Iterable[str], *, user: str | None = None,
                   keys_file: str | None = None) -> list[str]:
    """Return the argv that (re)writes a pool key's line in a user's authorized keys.

    Idempotent: any line holding the key is replaced by the new one (so the
    ``from=`` list follows the pool's membership); the file and its folder are
    created owner-only (and given to ``user``).

    Parameters
    ----------
    public_key
        The public key line (:func:`pool_ssh_key`).
    allowed_from
        The pool's node addresses (:func:`authorized_line`).
    user
        Whose keys; None: the user the command runs as.
    keys_file
        The host's authorized keys file for that user, sshd-style (``%h`` home,
        leading; ``%u`` user); default :data:`DEFAULT_KEYS_FILE`.

    Returns
    -------
    list of str
        ``["sh", "-c", script, "sh", line, key, user, file]``, behind
        ``runuser -u USER --`` when the file is in the user's home.
    """
    path = _keys_file(keys_file, user)
    return _as(user, path, ["sh", "-c", _KEYS, "sh", authorized_line(public_key, allowed_from),
                            _body(public_key), user or "", path])


def revoke_argv(public_key: str, *, user: str | None = None,
                keys_file: str | None = None) -> list[str]:
    """Return the argv that removes a pool key from a user's authorized keys.

    Every other line is kept; a missing file is not an error.

    Parameters
    ----------
    public_key
        The public key line to remove.
    user, keys_file
        As for :func:`authorize_argv`.

    Returns
    -------
    list of str
        ``["sh", "-c", script, "sh", "", key, user, file]``, behind ``runuser``
        as for :func:`authorize_argv`.
    """
    path = _keys_file(keys_file, user)
    return _as(user, path, ["sh", "-c", _KEYS, "sh", "", _body(public_key), user or "", path])
