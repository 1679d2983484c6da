"""ContainerRegistry on the wire: its password is write-only (never returned, never echoed by
an error), while the rest of the resource is returned as stored."""

from __future__ import annotations

import json

import pytest

from hpcbatch.batch.errors import BadRequestError
from hpcbatch.batch.models import PoolSpec, without_passwords
from hpcbatch.core.rows import returned_spec

SECRET = "hunter2-registry"  # the registry's password in every body below


def _pool(**cc: object) -> dict[str, object]:
    return {"id": "p", "vmSize": "any",
            "userAccounts": [{"name": "alice", "password": SECRET}],
            "virtualMachineConfiguration": {"containerConfiguration": {
                "type": "dockerCompatible", **cc}}}


def test_a_stored_spec_is_returned_without_any_password_at_any_depth() -> None:
    registry = {"registryServer": "acr.example", "userName": "u", "password": SECRET}
    schedule = {"id": "s", "jobSpecification": {
        "poolInfo": {"autoPoolSpecification": {"pool": _pool(containerRegistries=[registry])}},
        "jobManagerTask": {"id": "m", "commandLine": "x", "containerSettings": {
            "imageName": "i", "registry": registry}}}}
    out = returned_spec({"spec": json.dumps(schedule)})
    assert SECRET not in json.dumps(out)
    manager = out["jobSpecification"]["jobManagerTask"]
    assert manager["containerSettings"]["registry"] == {"registryServer": "acr.example",
                                                        "userName": "u"}
    assert without_passwords(schedule) == out and SECRET in json.dumps(schedule)  # a copy
    plain = {"id": "t", "commandLine": "x"}
    assert returned_spec({"spec": json.dumps(plain)}) == plain


@pytest.mark.parametrize("cc", [
    {"containerRegistries": [{"userName": "u", "password": SECRET, "bogus": 1}]},
    {"containerRegistries": [{"password": SECRET}]},
    {"containerImageNames": "not-a-list"},  # the whole pool is echoed: no password in it
])
def test_an_error_never_echoes_a_password(cc: dict[str, object]) -> None:
    with pytest.raises(BadRequestError) as info:
        PoolSpec.from_wire(_pool(**cc))
    assert info.value.status == 400 and SECRET not in json.dumps(info.value.to_wire())
