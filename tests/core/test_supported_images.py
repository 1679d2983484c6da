""""Account - List Supported Images" answers with what the inventory's hosts run."""

from __future__ import annotations

import sys
from pathlib import Path

from hpcbatch.batch.images import (
    image_for,
    node_agent_skus,
    parse_os_release,
    supported_images,
)
from tests.helpers import running_service

UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n'


def test_os_release_maps_to_batch_image_shapes() -> None:
    ubuntu = image_for(parse_os_release(UBUNTU))
    assert ubuntu == {"nodeAgentSKUId": "batch.node.ubuntu 22.04",
                      "imageReference": {"publisher": "canonical",
                                         "offer": "0001-com-ubuntu-server-jammy",
                                         "sku": "22_04-lts", "version": "latest"},
                      "osType": "linux", "capabilities": [], "verificationType": "verified"}
    rocky = image_for({"ID": "rocky", "VERSION_ID": "9.3"})
    assert rocky is not None and rocky["imageReference"]["offer"] == "rocky-9.3"
    assert image_for({"NAME": "no id"}) is None
    both = supported_images([parse_os_release(UBUNTU)] * 3 + [{"ID": "debian", "VERSION_ID": "12"}])
    assert [i["nodeAgentSKUId"] for i in both] == ["batch.node.debian 12", "batch.node.ubuntu 22.04"]
    assert node_agent_skus(both)[1]["verifiedImageReferences"][0]["sku"] == "22_04-lts"


def test_the_samples_image_picker_finds_what_this_machine_runs(tmp_path: Path) -> None:
    release = parse_os_release(Path("/etc/os-release").read_text())
    expected = image_for(release)
    assert expected is not None
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1") as (client, _):
        assert client.list_supported_images() == []  # no host, no image
        client.add_hosts([{"name": f"n{i}", "address": f"127.0.0.{95 + i}", "provider": "local",
                           "root_dir": str(tmp_path / f"n{i}"), "python": sys.executable}
                          for i in range(2)])
        images = client.list_supported_images()
        assert images == [expected]  # two hosts, one OS
        # The usual sample: the first verified image of the wanted distribution.
        sku = expected["nodeAgentSKUId"]
        picked = list(client.list_supported_images(
            filter=f"verificationType eq 'verified' and nodeAgentSKUId eq '{sku}'"))
        assert picked == [expected]
        assert client.list_supported_images(filter="osType eq 'windows'") == []
        # A pool made from it gets the hosts.
        client.create_pool({"id": "p", "vmSize": "any", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {
                                "imageReference": expected["imageReference"],
                                "nodeAgentSKUId": expected["nodeAgentSKUId"]}})
        assert [n.state for n in client.wait_for_pool("p", timeout_s=120)] == ["idle"]
