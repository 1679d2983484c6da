"""A node trusts the service's CA alone (docs/security.md, "Nodes: untrusted peers of the
service"): even Tornado's default client TLS context in the node process is built from the
pool's CA, not from the platform's CA store (``execution/node.trust_only_pool_ca``).

The attack: the platform's store (``SSL_CERT_FILE``) trusts another CA, whose certificate
a server on 127.0.61.1 presents; the node process connects to it through each of Tornado's
ways of using its default client context (an ``SSLIOStream`` without options,
``IOStream.start_tls`` without options, the simple HTTP client). Each handshake must fail;
the same ways reach a server with a certificate of the pool's CA, and, without
``trust_only_pool_ca``, the other CA's server too (the store really trusts it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hpcbatch.execution import pki

ADDRESS = "127.0.61.1"

CONNECT = r"""
import asyncio, json, socket, ssl, sys
from hpcbatch.execution import node

how, pool_ca, servers, ADDRESS = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
if how == "node":
    node.trust_only_pool_ca(pool_ca)
from tornado import iostream, simple_httpclient


async def serve(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, ADDRESS, 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def ssl_iostream(port):
    stream = iostream.SSLIOStream(socket.socket())
    try:
        await stream.connect((ADDRESS, port), server_hostname=ADDRESS)
        await stream.write(b"GET / HTTP/1.0\r\n\r\n")
        return (await stream.read_until_close()).endswith(b"ok")
    finally:
        stream.close()


async def start_tls(port):
    stream = iostream.IOStream(socket.socket())
    await stream.connect((ADDRESS, port))
    tls = await stream.start_tls(False, server_hostname=ADDRESS)
    try:
        await tls.write(b"GET / HTTP/1.0\r\n\r\n")
        return (await tls.read_until_close()).endswith(b"ok")
    finally:
        tls.close()


async def http_client(port):
    client = simple_httpclient.SimpleAsyncHTTPClient(force_instance=True)
    try:
        return (await client.fetch(f"https://{ADDRESS}:{port}/")).body == b"ok"
    finally:
        client.close()


async def main():
    out = {}
    for name, (cert, key) in servers.items():
        server, port = await serve(cert, key)
        async with server:
            for way in (ssl_iostream, start_tls, http_client):
                try:
                    out[f"{name} {way.__name__}"] = await asyncio.wait_for(way(port), 20)
                except ssl.SSLCertVerificationError:
                    out[f"{name} {way.__name__}"] = "refused"
                except Exception as exc:
                    verify = "CERTIFICATE_VERIFY_FAILED" in str(exc)
                    out[f"{name} {way.__name__}"] = "refused" if verify else repr(exc)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_a_nodes_default_tls_client_trusts_the_pools_ca_and_nothing_the_platform_trusts(
        tmp_path: Path) -> None:
    """Failed before the fix: the node's simple HTTP client still trusted the platform's
    store (the other CA's server) and not the pool's CA."""
    pool = pki.ensure_tls(tmp_path / "pool", [ADDRESS])
    other = pki.ensure_tls(tmp_path / "other", [ADDRESS])
    servers = {"pool": [str(pool.cert_file), str(pool.key_file)],
               "other": [str(other.cert_file), str(other.key_file)]}
    env = {**os.environ, "SSL_CERT_FILE": str(other.ca_file), "SSL_CERT_DIR": str(tmp_path)}
    results = {}
    for how in ("node", "platform"):
        done = subprocess.run([sys.executable, "-c", CONNECT, how, str(pool.ca_file),
                               json.dumps(servers), ADDRESS],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        results[how] = json.loads(done.stdout.strip().splitlines()[-1])
    ways = ("ssl_iostream", "start_tls", "http_client")
    # the platform's store trusts the other CA alone: the attack's server is a real one
    assert {w: results["platform"][f"other {w}"] for w in ways} == dict.fromkeys(ways, True)
    assert {w: results["platform"][f"pool {w}"] for w in ways} == dict.fromkeys(ways, "refused")
    # in the node process every default client context trusts the pool's CA, and only it
    assert {w: results["node"][f"pool {w}"] for w in ways} == dict.fromkeys(ways, True)
    assert {w: results["node"][f"other {w}"] for w in ways} == dict.fromkeys(ways, "refused")
