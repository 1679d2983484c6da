"""What a node process imports before it serves: Dask and the node agent, not what only
task file transfers, the certificate authority or notebooks need (every node start pays
for each import, on every node of a pool at once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Imported where they are needed (a task's files, the service's CA), or never in a node
# process (execution.node.UNUSED_MODULES).
NOT_BEFORE_SERVING = ("numpy", "jinja2", "fsspec", "cryptography")

SERVING = """
import json, sys
from hpcbatch.execution import node
node.forgo_unused_modules()
with node.libyaml_config():
    from distributed import Security, Worker
    from hpcbatch.execution import agent, guard, identity
print(json.dumps({m: sys.modules.get(m) is not None for m in sys.argv[1:]}))
"""


def test_a_serving_node_imports_neither_transfers_nor_the_ca_nor_numpy() -> None:
    out = subprocess.run([sys.executable, "-c", SERVING, *NOT_BEFORE_SERVING],
                         capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(NOT_BEFORE_SERVING, False), loaded


def test_forgone_modules_are_refused_and_dask_falls_back() -> None:
    code = ("from hpcbatch.execution import node; node.forgo_unused_modules()\n"
            "try:\n    import numpy\nexcept ImportError:\n    pass\n"
            "else:\n    raise SystemExit('numpy imported')\n"
            "from distributed.protocol.utils import host_array\n"
            "print(type(host_array(8).obj).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "bytearray"


CONFIG = """
import json, sys
import yaml
from hpcbatch.execution import node
safe_load = yaml.safe_load
if sys.argv[1] == "libyaml":
    with node.libyaml_config():
        assert yaml.safe_load is not safe_load
        import distributed
else:
    import distributed
import dask
assert yaml.safe_load is safe_load
print(json.dumps(dask.config.config, sort_keys=True, default=repr))
"""


def test_dask_config_read_with_libyaml_is_the_same_config() -> None:
    """The node process reads Dask's YAML with LibYAML while it imports Dask: the config
    it gets is the one PyYAML's own loader gives (defaults and this user's files), and
    ``yaml.safe_load`` is itself again afterwards."""
    import yaml

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML without LibYAML: the context changes nothing")
    configs = [subprocess.run([sys.executable, "-c", CONFIG, how], capture_output=True,
                              text=True, check=True).stdout for how in ("libyaml", "pyyaml")]
    assert json.loads(configs[0])["distributed"]["worker"]["memory"]["target"] == 0.6
    assert configs[0] == configs[1]
