"""The inventory is the operator's (docs/security.md, "Inventory: the operator's, not the API
caller's"): an API caller holding the account key cannot add hosts that run code on the
service machine or point the operator's SSH setup at arbitrary hosts; the operator can."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpcbatch.batch.sharedkey import generate_account_key
from hpcbatch.client.cli import cli
from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.client.state import service_connection
from tests.helpers import running_service

SSH_HOST = {"name": "plain", "address": "10.9.9.9", "labels": ["x"]}
REFUSED = [
    ({"name": "loc", "address": "127.0.0.1", "provider": "local", "python": "/bin/sh"},
     "provider"),
    ({"name": "key", "address": "10.9.9.10", "identity_file": "/root/.ssh/id_ed25519"},
     "identity_file"),
    ({"name": "cfg", "address": "10.9.9.11", "ssh_config": "/tmp/evil_config"}, "ssh_config"),
    ({"name": "kh", "address": "10.9.9.12", "known_hosts": "/etc/passwd"}, "known_hosts"),
    ({"name": "nocheck", "address": "10.9.9.13", "strict_host_key_checking": False},
     "strict_host_key_checking"),
]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, BatchClient]]:
    """A service; yields its state dir and an API caller's client (account key only)."""
    state = tmp_path_factory.mktemp("inv") / "state"
    with running_service(state, scheduler_host="127.0.0.1"):
        conn = service_connection(state)
        with BatchClient(conn.endpoint, conn.account, conn.key) as caller:
            yield state, caller


def host_names(client: BatchClient) -> set[str]:
    return {h["name"] for h in client.list_hosts()}


@pytest.mark.parametrize(("host", "field"), REFUSED, ids=[f for _, f in REFUSED])
def test_an_api_caller_cannot_add_operator_only_hosts(svc, host, field) -> None:
    _, caller = svc
    before = host_names(caller)
    with pytest.raises(BatchError) as err:
        caller.add_hosts([SSH_HOST, host])  # one bad host: nothing of the batch is added
    assert (err.value.status, err.value.code) == (403, "AuthorizationFailure")
    assert err.value.values["PropertyName"] == f"hosts[1].{field}"
    assert field in err.value.message and "allowed" in err.value.message
    assert "--allow-api-local-hosts" in err.value.message
    assert host_names(caller) == before


def test_an_api_caller_may_add_a_plain_ssh_host(svc) -> None:
    _, caller = svc
    caller.add_hosts([SSH_HOST])
    assert "plain" in host_names(caller)
    caller.remove_host("plain")


def test_a_forged_operator_proof_is_refused(svc) -> None:
    state, caller = svc
    conn = service_connection(state)
    with BatchClient(conn.endpoint, conn.account, conn.key,
                     operator_key=generate_account_key()) as forger, \
            pytest.raises(BatchError) as err:
        forger.add_hosts([REFUSED[0][0]])
    assert (err.value.status, err.value.code) == (403, "AuthenticationFailed")
    assert "hpcbatch-operator" in err.value.message
    assert "loc" not in host_names(caller)


def test_the_operator_adds_such_hosts_with_the_cli_and_the_sdk(svc, tmp_path: Path) -> None:
    state, caller = svc
    key_file = state / "operator.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(yaml.safe_dump({"hosts": [REFUSED[1][0], REFUSED[4][0]]}))
    result = CliRunner(env={"AZURE_BATCH_ENDPOINT": None, "HPCBATCH_STATE_DIR": None}).invoke(
        cli, ["--state-dir", str(state), "hosts", "add", "--file", str(inventory), "-o", "json"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert {h["name"] for h in json.loads(result.stdout)} == {"key", "nocheck"}
    with BatchClient.from_environment(state) as operator:  # the SDK on the service machine
        operator.add_hosts([REFUSED[0][0]])
    assert {"key", "nocheck", "loc"} <= host_names(caller)
    for name in ("key", "nocheck", "loc"):
        caller.remove_host(name)


def test_allow_api_local_hosts_opens_it_to_every_caller(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", scheduler_host="127.0.0.1",
                         allow_api_local_hosts=True):
        conn = service_connection(tmp_path / "state")
        assert json.loads((tmp_path / "state" / "service.json").read_text())[
            "allow_api_local_hosts"] is True
        with BatchClient(conn.endpoint, conn.account, conn.key) as caller:
            caller.add_hosts([host for host, _ in REFUSED])
            assert {"loc", "key", "cfg", "kh", "nocheck"} <= host_names(caller)
