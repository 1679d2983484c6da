"""What a node process imports before it serves: Dask and the node agent, not what only
task file transfers, the certificate authority or notebooks need (every node start pays
for each import, on every node of a pool at once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


TLS_ACCEPT = """
import asyncio, json, sys
import tornado.netutil
from distributed import Security
from distributed.comm import connect, listen
from hpcbatch.execution import node

ca, cert, key = sys.argv[2:5]
platform_default = tornado.netutil._client_ssl_defaults  # Tornado's own, before the node's
if sys.argv[1] == "pool-ca":
    node.trust_only_pool_ca(ca)
security = Security(tls_ca_file=ca, tls_worker_cert=cert, tls_worker_key=key,
                    tls_client_cert=cert, tls_client_key=key, require_encryption=True)


async def main():
    got = asyncio.get_running_loop().create_future()

    async def handle(comm):
        got.set_result(await comm.read())
        await comm.close()

    async with listen("tls://127.0.0.1:0", handle,
                      **security.get_listen_args("worker")) as listener:
        comm = await connect(listener.contact_address, **security.get_connection_args("worker"))
        await comm.write({"op": "ping"})
        message = await asyncio.wait_for(got, 10)
        await comm.close()
    stats = platform_default.cache_info()
    print(json.dumps({"message": message, "platform_store_loads": stats.misses}))


asyncio.run(main())
"""


def test_a_node_accepting_tls_does_not_load_the_platform_ca_store(tmp_path: Path) -> None:
    """A TLS connection accepted by a Dask listener, as the node's worker accepts the
    scheduler's: with :func:`~hpcbatch.execution.node.trust_only_pool_ca` (as the node
    process serves) Tornado never builds its default context from the platform's CA store
    (30-50 ms a node start), and the connection works; without it, Tornado builds it once."""
    from hpcbatch.execution import pki

    tls = pki.ensure_tls(tmp_path / "state")
    creds = pki.issue_node_credentials(tls, "pool", "node-1@0")
    files = []
    for name, data in (("ca.pem", creds.ca_pem), ("cert.pem", creds.cert_pem),
                       ("key.pem", creds.key_pem)):
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    loads = {}
    for how in ("pool-ca", "tornado-default"):
        out = subprocess.run([sys.executable, "-c", TLS_ACCEPT, how, *files],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["message"] == {"op": "ping"}, result
        loads[how] = result["platform_store_loads"]
    assert loads == {"pool-ca": 0, "tornado-default": 1}
