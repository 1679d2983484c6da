"""The node side of a pool's image prefetch: the runtime on the task PATH logs in to each
registry (password on stdin only) and pulls each image (argv, no shell), and the first failure
is reported with its image or registry and the runtime's words (never a password)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcbatch.batch.errors import InvalidPropertyValueError
from hpcbatch.batch.models import TaskSpec, check_container_configuration
from hpcbatch.core.image_prefetch import PREFETCH_MESSAGE_CHARS, prefetch_failure
from hpcbatch.execution import images

RUNTIME = """#!/bin/sh
printf '%s\\n' "$@" >> "$(dirname "$0")/argv.txt"
if [ "$1" = login ]; then
  IFS= read -r pw
  printf '%s\\n' "$pw" >> "$(dirname "$0")/stdin.txt"
  [ "$pw" = right ] && exit 0
  echo "unauthorized: incorrect username or password ($pw) for $6" >&2; exit 1
fi
case "$3" in
  slow-*) sleep 5 ;;
  bad-*) echo "manifest unknown: $3" >&2; exit 1 ;;
  quiet-*) exit 2 ;;
esac
"""


def _bin(tmp_path: Path, name: str = "podman") -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / name).write_text(RUNTIME)
    (bindir / name).chmod(0o755)
    return bindir


def _env(path: Path | str) -> dict[bytes, bytes]:
    return {b"PATH": os.fsencode(f"{path}:/usr/bin:/bin"), b"HOME": b"/nonexistent"}


def test_each_image_is_pulled_once_in_order_with_an_argv(tmp_path: Path) -> None:
    bindir = _bin(tmp_path)
    odd = "repo/name:tag; touch /tmp/x"  # never a shell: one argv item
    option = "--privileged"  # never an option of the runtime: after "--"
    out = images.pull_images("criCompatible", ["a:1", odd, option], _env(bindir))
    assert out == {"pulled": ["a:1", odd, option]}
    assert (bindir / "argv.txt").read_text().splitlines() == [
        "pull", "--", "a:1", "pull", "--", odd, "pull", "--", option]


def test_the_first_failure_stops_the_pulls_and_names_image_and_words(tmp_path: Path) -> None:
    bindir = _bin(tmp_path, "docker")
    out = images.pull_images("dockerCompatible", ["ok:1", "bad-one", "never"], _env(bindir))
    assert out["code"] == "ContainerInvalidImage" and out["image"] == "bad-one"
    assert "exited with code 1" in out["message"] and "manifest unknown: bad-one" in out["message"]
    assert "never" not in (bindir / "argv.txt").read_text()
    quiet = images.pull_images("dockerCompatible", ["quiet-x"], _env(bindir))
    assert quiet["image"] == "quiet-x" and "code 2: (no output)" in quiet["message"]


def test_a_pull_that_hangs_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = _bin(tmp_path)
    monkeypatch.setattr(images, "PULL_TIMEOUT_S", 0.3)
    out = images.pull_images("criCompatible", ["slow-x"], _env(bindir))
    assert (out["code"], out["image"]) == ("ContainerInvalidImage", "slow-x")
    assert "did not finish within 0.3 s" in out["message"]


def test_no_runtime_on_the_path_is_its_own_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = images.pull_images("criCompatible", ["a:1"], {b"PATH": os.fsencode(str(empty))})
    assert out["code"] == "ContainerRuntimeNotFound" and out["image"] is None
    assert "podman, nerdctl, docker" in out["message"] and str(empty) in out["message"]


def test_each_registry_is_logged_in_to_first_with_the_password_on_stdin_only(
        tmp_path: Path) -> None:
    bindir = _bin(tmp_path)
    registries = [{"registryServer": "my.reg:5000", "userName": "u", "password": "right"},
                  {"userName": "hub", "password": "right"}]  # docker.io by default
    out = images.pull_images("criCompatible", ["a:1"], _env(bindir), registries)
    assert out == {"pulled": ["a:1"]}
    assert (bindir / "argv.txt").read_text().splitlines() == [
        "login", "--username", "u", "--password-stdin", "--", "my.reg:5000",
        "login", "--username", "hub", "--password-stdin", "--", "docker.io",
        "pull", "--", "a:1"]
    assert (bindir / "stdin.txt").read_text().splitlines() == ["right", "right"]


def test_a_failed_login_stops_before_any_pull_and_never_tells_the_password(
        tmp_path: Path) -> None:
    bindir = _bin(tmp_path)
    secret = "s3cr3t; rm -rf /"
    out = images.pull_images("criCompatible", ["a:1"], _env(bindir), [
        {"registryServer": "ok.io", "userName": "u", "password": "right"},
        {"registryServer": "acr.example", "userName": "u", "password": secret}])
    assert (out["code"], out["server"], out["image"]) == (
        "ContainerRegistryLoginFailed", "acr.example", None)
    assert "exited with code 1" in out["message"] and "incorrect username" in out["message"]
    assert secret not in out["message"] and "(***)" in out["message"]  # the runtime said it
    argv = (bindir / "argv.txt").read_text()
    assert "pull" not in argv.splitlines() and secret not in argv


@pytest.mark.parametrize(("registry", "field"), [
    ({"userName": "u", "password": "p", "identityReference": {"resourceId": "/x"}},
     "identityReference"),
    ({"registryServer": "--config=/tmp", "userName": "u", "password": "p"}, "registryServer"),
    ({"registryServer": "a.io", "userName": "u x", "password": "p"}, "userName"),
    ({"registryServer": "a.io", "userName": "-u", "password": "p"}, "userName"),
    ({"userName": "u", "password": "sec\x00ret"}, "password"),
])
def test_a_registry_that_cannot_log_in_is_refused_naming_the_field(
        registry: dict[str, object], field: str) -> None:
    vm = {"containerConfiguration": {"type": "dockerCompatible",
                                     "containerRegistries": [registry]}}
    with pytest.raises(InvalidPropertyValueError) as pool_err:
        check_container_configuration(vm, request=True)
    assert pool_err.value.property_name == (
        f"virtualMachineConfiguration.containerConfiguration.containerRegistries[0].{field}")
    with pytest.raises(InvalidPropertyValueError) as task_err:
        TaskSpec.from_wire({"id": "t", "commandLine": "x", "containerSettings": {
            "imageName": "i", "registry": registry}})
    assert task_err.value.property_name == f"containerSettings.registry.{field}"
    for err in (pool_err.value, task_err.value):
        assert "sec\x00ret" not in str(err.to_wire())


def test_a_request_needs_user_and_password_but_a_returned_registry_has_no_password() -> None:
    with pytest.raises(InvalidPropertyValueError) as info:
        TaskSpec.from_wire({"id": "t", "commandLine": "x", "containerSettings": {
            "imageName": "i", "registry": {"userName": "u"}}})
    assert "password is required" in info.value.message
    read = TaskSpec.model_validate({"id": "t", "commandLine": "x", "containerSettings": {
        "imageName": "i", "registry": {"userName": "u"}}})  # as Task - Get returns it
    assert read.container_settings is not None
    registry = read.container_settings.registry
    assert registry is not None and registry.password is None
    assert images.registry_server(registry.to_wire()) == "docker.io"


def test_the_service_reads_a_nodes_pull_answer_as_from_an_untrusted_peer() -> None:
    """A node names no other error code, no image it was not asked for, no long message."""
    asked = ["a:1", "b:2"]
    assert prefetch_failure({"pulled": asked}, asked) is None
    assert prefetch_failure({"code": "ContainerRuntimeNotFound", "message": "m", "image": None},
                            asked) == ("ContainerRuntimeNotFound", "m", None)
    forged = prefetch_failure(
        {"code": "AccountKeyLeaked", "message": "x" * 10**6, "image": "evil:latest"}, asked)
    assert forged is not None
    assert (forged[0], forged[2]) == ("ContainerInvalidImage", None)
    assert len(forged[1]) == PREFETCH_MESSAGE_CHARS
    assert prefetch_failure({"code": "ContainerInvalidImage", "image": "b:2"}, asked) == (
        "ContainerInvalidImage", "", "b:2")
    odd = prefetch_failure(["not", "a", "mapping"], asked)
    assert odd is not None and odd[0] == "NodeStartFailed"
    login = {"code": "ContainerRegistryLoginFailed", "message": "m", "server": "r.io"}
    assert prefetch_failure(login, asked, ["r.io"]) == ("ContainerRegistryLoginFailed", "m",
                                                        "r.io")
    assert prefetch_failure({**login, "server": "evil.io"}, asked, ["r.io"]) == (
        "ContainerRegistryLoginFailed", "m", None)
