"""The container runtime argv (hpcbatch.execution.containers) and the containerSettings models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcbatch.batch.errors import BadRequestError
from hpcbatch.batch.models import PoolSpec, TaskSpec
from hpcbatch.execution import containers

SETTINGS = {"imageName": "busybox:latest", containers.TYPE_KEY: "dockerCompatible"}


def _exe(folder: Path, name: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_argv_mounts_the_node_root_sets_the_working_dir_and_passes_variables_by_name():
    argv = containers.container_argv(
        "/usr/bin/docker", {**SETTINGS, "containerRunOptions": "--cpus 2 --label 'a b'"},
        ["python3", "-c", "print('$HOME; rm -rf /')"], root_dir="/n/root",
        working_dir="/n/root/workitems/j/job-1/t/wd",
        env_names={"AZ_BATCH_TASK_ID": "t", "SECRET": "s3cr3t value"})
    assert argv == [
        "/usr/bin/docker", "run", "--rm", "--network", "host", "--init",
        "-v", "/n/root:/n/root", "-w", "/n/root/workitems/j/job-1/t/wd",
        "-e", "AZ_BATCH_TASK_ID", "-e", "SECRET",
        "--cpus", "2", "--label", "a b",
        "busybox:latest", "python3", "-c", "print('$HOME; rm -rf /')"]
    assert "s3cr3t value" not in " ".join(argv)  # values stay in the environment


def test_container_image_default_working_directory_gives_no_w():
    argv = containers.container_argv(
        "podman", {**SETTINGS, "workingDirectory": "containerImageDefault"}, ["true"],
        root_dir="/r", working_dir="/r/wd", env_names=[])
    assert "-w" not in argv and argv[-2:] == ["busybox:latest", "true"]


def test_unbalanced_run_options_raise():
    with pytest.raises(ValueError):
        containers.container_argv("docker", {**SETTINGS, "containerRunOptions": "--label 'x"},
                                  ["true"], root_dir="/r", working_dir="/r/wd", env_names=[])


def test_runtime_is_looked_for_on_the_given_path_docker_first(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert containers.find_runtime("dockerCompatible", str(empty)) is None
    podman = _exe(tmp_path, "podman")
    assert containers.find_runtime("dockerCompatible", str(tmp_path)) == podman
    docker = _exe(tmp_path, "docker")
    assert containers.find_runtime("dockerCompatible", str(tmp_path)) == docker
    assert containers.find_runtime("criCompatible", str(tmp_path)) == podman
    assert containers.find_runtime(None, os.environ.get("PATH", "")) is None


def test_launch_container_carries_the_pool_type_or_none():
    vm = {"containerConfiguration": {"type": "criCompatible"}}
    assert containers.launch_container(None, vm) is None
    assert containers.launch_container({"imageName": "x"}, vm) == {
        "imageName": "x", containers.TYPE_KEY: "criCompatible"}
    assert containers.launch_container({"imageName": "x"}, None) == {
        "imageName": "x", containers.TYPE_KEY: None}


def test_models_accept_settings_and_refuse_what_is_not_supported():
    task = TaskSpec.from_wire({"id": "t", "commandLine": "true", "containerSettings": {
        "imageName": "busybox", "workingDirectory": "containerImageDefault"}})
    assert task.container_settings.image_name == "busybox"
    for bad, word in [({"imageName": "--privileged"}, "image name"),
                      ({"imageName": "b", "workingDirectory": "elsewhere"}, "workingDirectory"),
                      ({"imageName": "b", "registry": {"registryServer": "r"}}, "registry")]:
        with pytest.raises(BadRequestError, match=word):
            TaskSpec.from_wire({"id": "t", "commandLine": "true", "containerSettings": bad})
    pool = {"id": "p", "vmSize": "any",
            "startTask": {"commandLine": "true", "containerSettings": {"imageName": "b"}}}
    with pytest.raises(BadRequestError, match="containerConfiguration"):
        PoolSpec.from_wire(pool)
    PoolSpec.from_wire({**pool, "virtualMachineConfiguration": {
        "containerConfiguration": {"type": "dockerCompatible", "containerImageNames": ["b"]}}})
    for cc, word in [({"type": "lxc"}, "dockerCompatible, criCompatible"),
                     ({"type": "dockerCompatible", "containerRegistries": [{"u": 1}]},
                      "containerRegistries")]:
        with pytest.raises(BadRequestError, match=word):
            PoolSpec.from_wire({**pool, "virtualMachineConfiguration": {
                "containerConfiguration": cc}})
