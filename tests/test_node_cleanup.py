"""Node files and cleanup: package zips lose setuid/setgid; reimage empties only a node root.

docs/security.md, "Node files and cleanup". Each test tries to break a promise:
a crafted zip with setuid/setgid entries, and node roots that are ``/``, a
home directory, a system folder, a link to a home directory, or a folder
hpcbatch did not make.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from hpcbatch import LocalBatch
from hpcbatch.batch.errors import InvalidPropertyValueError, NodeConnectionError
from hpcbatch.client.sdk import BatchError
from hpcbatch.execution import packages
from hpcbatch.providers.base import ROOT_MARKER, NodeRootRefusedError
from hpcbatch.providers.inventory import Host, parse_inventory
from hpcbatch.providers.local import LocalProvider
from tests.helpers import wait_until

# --------------------------------------------------------------------------- zips


def _zip(entries: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (data, mode) in entries.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix: the high 16 bits are st_mode
            info.external_attr = (mode | (stat.S_IFDIR if name.endswith("/") else stat.S_IFREG)) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def test_package_zip_entries_keep_exec_bits_but_never_setuid_or_setgid(tmp_path: Path) -> None:
    archive = _zip({
        "bin/": (b"", 0o6755),
        "bin/suid": (b"#!/bin/sh\nid\n", 0o4755),
        "bin/sgid": (b"#!/bin/sh\nid\n", 0o2755),
        "bin/both": (b"#!/bin/sh\nid\n", 0o6777),
        "data.txt": (b"d", 0o644),
    })

    def fetch(_key: str, local: Path) -> None:
        local.write_bytes(archive)

    folder = packages.install(tmp_path, packages.PackageRef("app", "1", "k"), fetch)
    modes = {p: stat.S_IMODE((folder / p).stat().st_mode)
             for p in ("bin", "bin/suid", "bin/sgid", "bin/both", "data.txt")}
    assert modes == {"bin": 0o755, "bin/suid": 0o755, "bin/sgid": 0o755, "bin/both": 0o777,
                     "data.txt": 0o644}
    assert os.access(folder / "bin/suid", os.X_OK)


# --------------------------------------------------------------------------- root_dir

DANGEROUS = ["/", "~", "~/", "/root", "/home/alice", "/home/alice/", "/Users/bob", "/home",
             "/etc/hpcbatch", "/usr/local", "/var/lib", "/tmp", "/srv", "~bob/node",
             "relative/node", "/srv/a/../..", "/srv//x"]


@pytest.mark.parametrize("root_dir", DANGEROUS)
def test_an_inventory_refuses_a_root_dir_that_is_not_a_folder_of_its_own(root_dir: str) -> None:
    text = f"hosts:\n  - {{address: 10.0.0.1, root_dir: '{root_dir}'}}\n"
    with pytest.raises(InvalidPropertyValueError) as refused:
        parse_inventory(text, "inv.yaml")
    assert refused.value.values["PropertyName"] == "hosts[0].root_dir", refused.value.values


def test_safe_root_dirs_are_accepted() -> None:
    for root in ("~/.hpcbatch-node", "/srv/hpcbatch", "/scratch/hpcbatch/node", "/home/alice/node",
                 "/tmp/hpcbatch-node"):
        assert Host(name="h", address="h", root_dir=root).root_dir == root


def test_rest_host_add_refuses_a_dangerous_root_dir(tmp_path: Path) -> None:
    with LocalBatch(nodes=0, state_dir=tmp_path / "state") as client:
        for root_dir in ("/", "/root", "/home/alice", "~"):
            with pytest.raises(BatchError) as refused:
                client.add_hosts([{"name": "h", "address": "10.0.0.9", "root_dir": root_dir}])
            assert refused.value.status == 400, root_dir
            assert "root_dir" in f"{refused.value.message} {refused.value.values}", root_dir
        assert client.list_hosts() == []


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME of the local provider's commands: a throw-away folder with a file in it."""
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    (home / "thesis.tex").write_text("precious")
    monkeypatch.setenv("HOME", str(home))
    return home


def _provider(root: Path) -> LocalProvider:
    return LocalProvider(Host(name="here", address="127.0.0.1", provider="local",
                              python=sys.executable, root_dir=str(root)))


def test_wipe_empties_a_node_root_but_keeps_its_marker(tmp_path: Path, fake_home: Path) -> None:
    provider = _provider(tmp_path / "nodes" / "n1")
    root = Path(provider.prepare())
    assert (root / ROOT_MARKER).is_file()
    for name in ("sub/deep.txt", ".hidden", "..dots", "-rf", "plain"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    provider.wipe(str(root))
    assert sorted(p.name for p in root.iterdir()) == [ROOT_MARKER]
    assert (fake_home / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("root_dir", ["/", "/root", "/home/alice", "~", "/etc/x", "relative"])
def test_wipe_refuses_a_dangerous_root_before_touching_the_host(root_dir: str, tmp_path: Path) -> None:
    provider = _provider(tmp_path / "n")
    with pytest.raises(NodeRootRefusedError) as refused:
        provider.wipe(root_dir)
    assert refused.value.code == "NodeReimageRefused" and root_dir in refused.value.message


def test_wipe_refuses_a_link_to_the_home_directory(tmp_path: Path, fake_home: Path) -> None:
    (fake_home / ROOT_MARKER).touch()  # even if the marker got there
    link = tmp_path / "nodes" / "n1"
    link.parent.mkdir()
    link.symlink_to(fake_home)
    with pytest.raises(NodeRootRefusedError, match="home directory"):
        _provider(link).wipe(str(link))
    assert (fake_home / "thesis.tex").read_text() == "precious"


def test_wipe_refuses_a_parent_of_the_home_directory(tmp_path: Path, fake_home: Path) -> None:
    parent = fake_home.parent.parent  # tmp_path/home holds alice's home
    (parent / ROOT_MARKER).touch()
    with pytest.raises(NodeRootRefusedError, match="home directory"):
        _provider(parent).wipe(str(parent))
    assert (fake_home / "thesis.tex").read_text() == "precious"


@pytest.fixture
def used_folder(tmp_path: Path, fake_home: Path) -> Path:
    """A folder of someone's results that an operator names as a node root by mistake."""
    data = tmp_path / "shared" / "results"
    data.mkdir(parents=True)
    (data / "run1.csv").write_text("keep me")
    return data


def test_wipe_refuses_a_folder_hpcbatch_did_not_make(used_folder: Path) -> None:
    with pytest.raises(NodeRootRefusedError, match=ROOT_MARKER):
        _provider(used_folder).wipe(str(used_folder))
    assert (used_folder / "run1.csv").read_text() == "keep me"


def test_a_used_folder_cannot_become_a_node_root(tmp_path: Path, used_folder: Path) -> None:
    with pytest.raises(NodeConnectionError, match="did not put there"):
        _provider(used_folder).prepare()
    assert not (used_folder / ROOT_MARKER).exists()
    # an empty folder is fine (the operator made it for the node), and so is a node root
    # of an earlier hpcbatch (it has node.json)
    (tmp_path / "empty").mkdir()
    assert _provider(tmp_path / "empty").prepare() == str(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "node.json").write_text("{}")
    assert _provider(tmp_path / "old").prepare() == str(tmp_path / "old")
    assert (tmp_path / "old" / ROOT_MARKER).exists()


def test_a_refused_reimage_removes_nothing_and_says_why(tmp_path: Path) -> None:
    """Through the service: a node root that lost its marker is not wiped by a reimage."""
    with LocalBatch(nodes=1, state_dir=tmp_path / "state") as client:
        client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1})
        (node,) = client.wait_for_pool("p", timeout_s=120)
        root = tmp_path / "state" / "nodes" / "local-1"
        assert (root / ROOT_MARKER).is_file()
        (root / ROOT_MARKER).unlink()  # as if someone's folder had become the node root
        (root / "shared" / "keep.txt").write_text("keep me")
        client.reimage_node("p", node.id)
        wait_until(lambda: client.get_node("p", node.id).state == "unusable", timeout_s=60)
        errors = client.get_node("p", node.id).errors
        assert errors[0].code == "NodeReimageRefused" and ROOT_MARKER in errors[0].message
        assert (root / "shared" / "keep.txt").read_text() == "keep me"
