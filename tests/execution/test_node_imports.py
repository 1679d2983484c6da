"""What a node process imports before it serves: Dask and the node agent, not what only
task file transfers, the certificate authority or notebooks need (every node start pays
for each import, on every node of a pool at once)."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported where they are needed (a task's files, the service's CA), or never in a node
# process (execution.node.UNUSED_MODULES).
NOT_BEFORE_SERVING = ("numpy", "jinja2", "fsspec", "cryptography")

SERVING = """
import json, sys
from hpcbatch.execution import node
node.forgo_unused_modules()
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
