"""Inventory ``env``: site settings reach every task on the host (issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.providers.inventory import load_inventory
from tests.helpers import running_service


def test_inventory_env_merges_over_defaults_and_rejects_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("defaults: {env: {MODULEPATH: /site/modules, SCRATCH: /scratch}}\n"
                    "hosts:\n"
                    "  - {address: a, env: {SCRATCH: /fast}}\n"
                    "  - {address: b}\n")
    a, b = load_inventory(path)
    assert a.env == {"MODULEPATH": "/site/modules", "SCRATCH": "/fast"}
    assert b.env == {"MODULEPATH": "/site/modules", "SCRATCH": "/scratch"}
    for bad in ("1X", "AZ_BATCH_NODE_ID", "A-B"):
        path.write_text(f"hosts:\n  - {{address: a, env: {{{bad}: x}}}}\n")
        with pytest.raises(HpcbatchError, match="env"):
            load_inventory(path)


def test_a_task_sees_the_hosts_env_and_its_own_settings_win(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        client.add_hosts([{"name": "n0", "address": "127.0.0.70", "provider": "local",
                           "root_dir": str(tmp_path / "n0"), "python": sys.executable,
                           "env": {"SITE_SCRATCH": "/scratch/site", "SITE_MPI": "mpich"}}])
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1})
        client.wait_for_pool("p", timeout_s=120)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        show = "/bin/sh -c 'echo $SITE_SCRATCH $SITE_MPI'"
        client.create_tasks("j", [
            {"id": "site", "commandLine": show},
            {"id": "own", "commandLine": show,
             "environmentSettings": [{"name": "SITE_MPI", "value": "openmpi"}]}])
        counts = client.wait_for_tasks("j", timeout_s=60)
        assert counts["succeeded"] == 2, counts
        assert client.download_task_file("j", "site", "stdout.txt") == b"/scratch/site mpich\n"
        assert client.download_task_file("j", "own", "stdout.txt") == b"/scratch/site openmpi\n"
