"""A pool account's ``sshPrivateKey`` pair (Batch's ``linuxUserConfiguration``) is written
into its ``~/.ssh`` by a process of the account itself, never by root: a link its tasks
planted there cannot make the node's set-up write a file the account may not write.

Runs the node set-up (:func:`hpcbatch.execution.identity.setup_node`, what a node runs as
root when it starts) with a real account on this machine; needs root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpcbatch.execution import identity
from tests.helpers import reachable_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a user account: needs root")

ACCOUNT = "hbkeyacct"


@pytest.fixture
def spec() -> Iterator[tuple[dict, str]]:
    """A pool spec with one account holding an ed25519 ``sshPrivateKey``, and its public key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    yield ({"accounts": [{"name": ACCOUNT, "password": "acct-pw-1",
                          "linuxUserConfiguration": {"sshPrivateKey": private}}],
            "inter_node": True}, public)
    subprocess.run(["userdel", "--remove", ACCOUNT], capture_output=True, check=False)


def test_the_key_pair_is_the_accounts_and_links_in_its_ssh_dir_are_not_followed(spec) -> None:
    pool, public = spec
    with reachable_dir() as tmp:
        closed = tmp / "rootonly"
        closed.mkdir(mode=0o700)
        target = closed / "cron-job"
        target.write_text("root's\n")
        identity.setup_node(tmp / "node", pool)
        entry = pwd.getpwnam(ACCOUNT)
        ssh = Path(entry.pw_dir) / ".ssh"
        private = ssh / "id_ed25519"
        assert (private.stat().st_uid, private.stat().st_mode & 0o777) == (entry.pw_uid, 0o600)
        assert (ssh / "id_ed25519.pub").read_text() == public + "\n"
        assert public in (ssh / "authorized_keys").read_text().splitlines()
        # What a task of the account can do between two node starts: put links where the
        # set-up writes (here made by root, as the account would, to a root-only file).
        for name in ("id_ed25519.pub", "authorized_keys"):
            (ssh / name).unlink()
            (ssh / name).symlink_to(target)
        identity.setup_node(tmp / "node", pool)  # the node starts again
        assert target.read_text() == "root's\n"
        assert (target.stat().st_uid, closed.stat().st_uid) == (0, 0)
        for name in ("id_ed25519.pub", "authorized_keys"):
            assert not (ssh / name).is_symlink()
            assert (ssh / name).stat().st_uid == entry.pw_uid
        assert public in (ssh / "authorized_keys").read_text().splitlines()
        # ... or make ~/.ssh itself a link to a folder it cannot write: the node still
        # starts (the link is the account's to replace), and the folder is untouched.
        shutil.rmtree(ssh)
        ssh.symlink_to(closed)
        identity.setup_node(tmp / "node", pool)
        assert not ssh.is_symlink() and ssh.stat().st_uid == entry.pw_uid
        assert sorted(os.listdir(closed)) == ["cron-job"]
        assert public in (ssh / "authorized_keys").read_text().splitlines()
