"""The SDK's HTTP transport (``http.client``), its errors, and ranged file reads.

The transport is checked against a real HTTP/1.1 server (the standard
library's, which keeps connections alive and can be told to drop one while it
is idle, as a server's keep-alive timeout does); the SDK against a real
service with a real local node.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcbatch import BatchClient, HpcbatchError, LocalBatch
from hpcbatch.batch.errors import ServiceNotRunningError
from hpcbatch.batch.sharedkey import generate_account_key, verify
from hpcbatch.client.cli import cli
from hpcbatch.client.transport import Transport


class Server(ThreadingHTTPServer):
    """Answers every request with its own view of it; counts connections."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.drop_after_reply = False
        self.drop_second_request = False
        self.key = generate_account_key()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.requests = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.requests += 1
        if self.server.drop_second_request and self.requests == 2:
            self.close_connection = True  # closed as the request came: no answer
            return
        try:
            verify(self.command, self.path, None, dict(self.headers), "acct", self.server.key)
            signed = True
        except HpcbatchError:
            signed = False
        data = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                           "signed": signed, "contentLength": self.headers.get("Content-Length"),
                           "range": self.headers.get("ocp-range")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.drop_after_reply:  # as a keep-alive timeout would, without saying so
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = _answer


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_connection_is_kept_alive(server: Server) -> None:
    transport = Transport(timeout_s=10)
    try:
        for i in range(3):
            resp = transport.request("GET", f"{server.url}/jobs?i={i}", {})
            assert resp.status == 200 and resp.json()["path"] == f"/jobs?i={i}"
    finally:
        transport.close()
    assert server.connections == 1


def test_connection_closed_while_idle_is_replaced(server: Server) -> None:
    """A GET goes once more on a new connection; a POST finds the closed one before it is sent."""
    server.drop_after_reply = True
    transport = Transport(timeout_s=10)
    try:
        for _ in range(3):
            assert transport.request("GET", f"{server.url}/jobs", {}).status == 200
        for _ in range(3):
            time.sleep(0.2)  # the server has closed it by now
            resp = transport.request("POST", f"{server.url}/jobs", {"Content-Length": "2"}, b"{}")
            assert resp.json()["body"] == "{}"
    finally:
        transport.close()
    assert server.connections == 6


def test_request_on_a_connection_closed_under_it(server: Server) -> None:
    """Sent as the server closed the connection: a GET is sent again, a POST is not."""
    server.drop_second_request = True
    transport = Transport(timeout_s=10)
    try:
        assert transport.request("GET", f"{server.url}/a", {}).status == 200
        assert transport.request("GET", f"{server.url}/b", {}).json()["path"] == "/b"
        assert server.connections == 2
        with pytest.raises(ConnectionError):  # it may have been acted on: not sent again
            transport.request("POST", f"{server.url}/c", {"Content-Length": "0"})
        assert transport.request("POST", f"{server.url}/d", {"Content-Length": "0"}).status == 200
        assert server.connections == 3
    finally:
        transport.close()


def test_client_signs_every_request_and_sends_its_length(server: Server) -> None:
    with BatchClient(server.url, "acct", server.key) as client:
        sent = client._request("POST", "/jobs/a%20b/terminate").json()
        assert sent["signed"] and sent["contentLength"] == "0"
        assert sent["path"].startswith("/jobs/a%20b/terminate?api-version=")
        sent = client._request("GET", "/jobs", params={"$filter": "id eq 'x'"}).json()
        assert sent["signed"] and sent["contentLength"] is None
        sent = client._request("POST", "/jobs", body={"id": "é"}).json()
        assert sent["signed"] and sent["body"] == '{"id":"\\u00e9"}'
    with BatchClient(server.url, "acct", generate_account_key()) as other:
        assert not other._request("GET", "/jobs").json()["signed"]


def test_unreachable_service_is_service_unavailable(server: Server) -> None:
    url = server.url
    server.shutdown()
    server.server_close()
    with BatchClient(url, "acct", server.key) as client, \
            pytest.raises(ServiceNotRunningError, match="cannot reach"):
        client.list_jobs_json()


def test_cli_names_a_bad_account_key() -> None:
    result = CliRunner(env={"AZURE_BATCH_ENDPOINT": "http://127.0.0.1:9",
                            "AZURE_BATCH_ACCOUNT": "a", "AZURE_BATCH_ACCESS_KEY": "not-base64",
                            "HPCBATCH_STATE_DIR": None}).invoke(cli, ["job", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: InvalidAccountKey: AZURE_BATCH_ACCESS_KEY")


def test_download_task_file_from_an_offset(tmp_path: Path) -> None:
    with LocalBatch(nodes=1) as client:
        client.create_pool({"id": "p", "vmSize": "local", "targetDedicatedNodes": 1})
        assert [n.state for n in client.wait_for_pool("p", timeout_s=120)] == ["idle"]
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        client.create_task("j", {"id": "t", "commandLine": "echo hello world"})
        assert client.wait_for_tasks("j", timeout_s=120)["succeeded"] == 1
        assert client.download_task_file("j", "t", "stdout.txt") == b"hello world\n"
        assert client.download_task_file("j", "t", "stdout.txt", offset_bytes=6) == b"world\n"
        # a destination's missing folders are made, as hpcbatch output/task file download do
        saved = tmp_path / "logs" / "t" / "stdout.txt"
        assert client.download_task_file("j", "t", "stdout.txt", saved) == b"hello world\n"
        assert saved.read_bytes() == b"hello world\n"
        assert [t["id"] for t in client.list_tasks_json("j", select="id")] == ["t"]
        assert client.get_task("j", "t").execution_info.exit_code == 0
