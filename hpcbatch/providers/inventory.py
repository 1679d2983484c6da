"""The host inventory: the SSH-reachable machines that play Azure's capacity.

A pool's ``vmSize`` selects inventory hosts by label (``any`` matches all) and
``targetDedicatedNodes`` says how many to take (see DESIGN.md, "Host inventory
and pools"). The inventory is a YAML file::

    defaults:                 # optional; any Host field except name/address
      user: batch
      identity_file: keys/id_ed25519   # relative to this file's folder
      cores: 8
    hosts:
      - {address: 10.0.0.11, labels: [standard_d2]}
      - {name: gpu1, address: 10.0.0.12, port: 2222, cores: 16, labels: [gpu]}
      - {address: 10.0.0.13, low_priority: true}   # serves targetLowPriorityNodes

A bare list of hosts (no ``defaults``) is accepted too.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pydantic
import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from hpcbatch.batch.errors import BadRequestError, InvalidPropertyValueError

__all__ = ["Host", "SshTarget", "check_root_dir", "dump_inventory", "load_inventory",
           "parse_inventory", "ssh_target"]

#: Host fields holding paths on *this* machine; relative ones are resolved
#: against the inventory file's folder.
LOCAL_PATH_FIELDS = ("identity_file", "ssh_config", "known_hosts")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Folders a node root must never be: emptied on reimage, they would take the system or
# a user's files with them. Top-level folders are refused anyway (one segment).
_SYSTEM_DIRS = frozenset(
    [f"/usr/{d}" for d in ("bin", "etc", "games", "include", "lib", "lib32", "lib64", "libexec",
                            "local", "sbin", "share", "src")]
    + [f"/var/{d}" for d in ("backups", "cache", "db", "empty", "lib", "local", "lock", "log",
                              "mail", "opt", "run", "spool", "tmp", "www")]
    + ["/usr/local/bin", "/usr/local/lib", "/usr/local/share", "/usr/local/sbin", "/run/user"])
_HOME_PARENTS = ("/home", "/Users", "/export/home", "/var/home")
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                 "/sbin", "/sys", "/snap")


def check_root_dir(value: str) -> str:
    """Return a node root directory if it is safe to empty on reimage; raise ValueError otherwise.

    A node's root is wiped ("Compute Node - Reimage" removes everything in it),
    so it must be a folder of its own: an absolute path (or ``~/...``), without
    ``.``/``..`` segments, at least two levels below ``/`` (or one below ``~``),
    and neither ``/``, a home directory (``~``, ``/root``, ``/home/{user}``,
    ``/Users/{user}``...), nor a system folder (``/usr/local``, ``/var/lib``,
    anything under ``/etc``, ``/proc``...). The node provider checks again on
    the host, with links resolved, before it wipes (see
    :meth:`hpcbatch.providers.base.NodeProvider.wipe`).

    Parameters
    ----------
    value
        ``Host.root_dir`` as written (``~`` not expanded) or as expanded on the host.

    Returns
    -------
    str
        ``value`` without a trailing ``/``.

    Raises
    ------
    ValueError
        The path is not a dedicated folder; the message says why.
    """
    path = value.rstrip("/") if value not in ("/", "") else value
    if path.startswith("~"):
        head, _, rest = path.partition("/")
        if head != "~":
            raise ValueError(f"{value!r}: use ~/ (the login user's home) or an absolute path, "
                             "not another user's home")
        segments, base = rest.split("/") if rest else [], "~"
    elif path.startswith("/"):
        segments, base = path[1:].split("/") if path != "/" else [], ""
    else:
        raise ValueError(f"{value!r} must be an absolute path or start with ~/ "
                         "(a relative path depends on the login directory)")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ValueError(f"{value!r} must not contain empty, '.' or '..' segments")
    if base == "~":
        if not segments:
            raise ValueError(f"{value!r} is a home directory: a node root is emptied on reimage; "
                             "give a folder of its own, such as ~/.hpcbatch-node")
        return path
    if not segments:
        raise ValueError(f"{value!r} is the file-system root: a node root is emptied on reimage")
    if path == "/root" or (len(segments) == 2 and f"/{segments[0]}" in _HOME_PARENTS) or \
            path in _HOME_PARENTS:
        raise ValueError(f"{value!r} is a home directory: a node root is emptied on reimage; "
                         "give a folder of its own inside it")
    if len(segments) < 2 or path in _SYSTEM_DIRS or \
            any(path == t or path.startswith(t + "/") for t in _SYSTEM_TREES):
        raise ValueError(f"{value!r} is a system or shared folder, not a folder of its own: "
                         "a node root is emptied on reimage (use e.g. /srv/hpcbatch/node)")
    return path


class Host(pydantic.BaseModel):
    """One SSH-reachable machine of the inventory.

    Attributes
    ----------
    name
        Inventory name (letters, digits, ``.``, ``-``, ``_``; at most 64
        characters); defaults to ``address``. Unique, case-insensitively.
    address
        Host name or IP address (or an ``ssh_config`` ``Host`` alias).
    port
        SSH port; with the default 22, a ``Port`` the ssh config gives for
        ``address`` applies.
    user
        Login user; ``None`` means the ssh config's ``User`` or the current user.
    identity_file
        Private key file on this machine.
    cores
        Number of cores the node offers (its task slots are derived from it).
    memory_gb
        Memory of the host, in GiB.
    labels
        Labels a pool's ``vmSize`` selects the host by.
    provider
        ``"ssh"`` (reach the host over SSH), ``"local"`` (this machine) or
        ``"simulated"`` (a lightweight node served by the service itself, for
        scale tests: :mod:`hpcbatch.providers.simulated`, ``docs/scale.md``).
    root_dir
        Node root directory on the host (``AZ_BATCH_NODE_ROOT_DIR``); ``~`` is
        expanded on the host. It is emptied on reimage, so it must be a folder
        of its own (see :func:`check_root_dir`): not ``/``, a home directory or
        a system folder.
    python
        Interpreter on the host that has hpcbatch and distributed installed.
    ssh_config
        Path of an ssh_config file honoured in addition to ``~/.ssh/config``.
    known_hosts
        Path of the known_hosts file; ``None`` means the ssh config's
        ``UserKnownHostsFile`` or ``~/.ssh/known_hosts``.
    strict_host_key_checking
        Reject hosts whose key is not in ``known_hosts`` (``False`` accepts any
        host key: for throw-away test machines only).
    env
        Site settings every task, start task, job preparation/release task and MPI
        launch on the host gets as environment variables (module paths, an MPI
        install, scratch directories). Names are ``[A-Za-z_][A-Za-z0-9_]*`` and may
        not start with ``AZ_BATCH_`` (Batch's own); a task's own
        ``environmentSettings`` override them. In an inventory file, a host's
        ``env`` is merged over ``defaults.env``.
    sudo
        The login user may run ``sudo -n`` (no password) on the host: the node
        process then runs as root through it, so that tasks run as the users their
        ``userIdentity`` names (pool auto-users, task users, pool accounts) as on a
        host logged into as root; creating those users, writing their keys and
        emptying the node root go through ``sudo -n`` too. ``False`` (default): a
        non-root login user's tasks share its identity, and the pool says so.
    low_priority
        The host is low-priority (preemptible) capacity: a pool's
        ``targetLowPriorityNodes`` is served from such hosts only, and its
        ``targetDedicatedNodes`` from the others; its nodes show ``isDedicated:
        false``. Default ``False`` (dedicated).
    images
        Marketplace images the host also stands in for, beyond the one its
        ``/etc/os-release`` maps to, as Azure URNs ``publisher:offer:sku``
        (an optional ``:version`` is ignored), e.g.
        ``canonical:0001-com-ubuntu-server-jammy:22_04-lts``: a pool whose
        ``imageReference`` names one may take the host. Compared case-insensitively.
    authorized_keys
        The host sshd's ``AuthorizedKeysFile`` for pool keys, with sshd's
        tokens: a leading ``%h`` (the user's home) and ``%u`` (the user name),
        e.g. ``/etc/ssh/authorized_keys/%u``; ``None`` means
        ``%h/.ssh/authorized_keys``. Pool keys (inter-node communication) are
        written there.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    address: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    identity_file: str | None = None
    cores: int = Field(default=1, ge=1)
    memory_gb: float = Field(default=1.0, gt=0)
    labels: list[str] = Field(default_factory=list)
    provider: Literal["ssh", "local", "simulated"] = "ssh"
    root_dir: str = "~/.hpcbatch-node"
    python: str = "python3"
    ssh_config: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    sudo: bool = False
    low_priority: bool = False
    images: list[str] = Field(default_factory=list)
    authorized_keys: str | None = None

    @field_validator("images")
    @classmethod
    def _check_images(cls, value: list[str]) -> list[str]:
        for urn in value:
            parts = urn.split(":")
            if len(parts) not in (3, 4) or not all(p.strip() for p in parts[:3]):
                raise ValueError(f"image {urn!r} must be an Azure URN publisher:offer:sku "
                                 "(optionally :version), e.g. "
                                 "canonical:0001-com-ubuntu-server-jammy:22_04-lts")
        return value

    @field_validator("authorized_keys")
    @classmethod
    def _check_keys_file(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("/", "%h/"))
                                  or any(c in value for c in "\n\0") or "%h" in value[2:]):
            raise ValueError("must be an absolute path or start with %h/ (sshd's "
                             "AuthorizedKeysFile tokens: a leading %h, and %u)")
        return value

    @field_validator("root_dir")
    @classmethod
    def _check_root_dir(cls, value: str) -> str:
        return check_root_dir(value)

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if name.upper().startswith("AZ_BATCH_"):
                raise ValueError(f"variable {name!r}: AZ_BATCH_* variables are Batch's own")
        return value

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_address(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is None and "address" in data:
            data = {**data, "name": str(data["address"])}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1 to 64 letters, digits, '.', '-' or '_' "
                "(give the host a name when its address is not one)"
            )
        return value

    def matches(self, vm_size: str) -> bool:
        """Tell whether a pool of this ``vmSize`` may take the host.

        Parameters
        ----------
        vm_size
            The pool's ``vmSize``; compared case-insensitively.

        Returns
        -------
        bool
            ``True`` when ``vm_size`` is ``"any"`` or one of the host's labels.
        """
        wanted = vm_size.lower()
        return wanted == "any" or any(label.lower() == wanted for label in self.labels)


class SshTarget(NamedTuple):
    """Where SSH really goes for a host: its inventory fields with its ssh config applied.

    Attributes
    ----------
    address
        The ``HostName`` the ssh config gives for the host's address (an alias), else
        the address.
    port
        The inventory port; with the default 22, the config's ``Port`` for the address.
    user
        The inventory user, else the config's ``User``, else None (the current user).
    identity_file
        The inventory key, else the config's first ``IdentityFile``, else None.
    """

    address: str
    port: int
    user: str | None
    identity_file: str | None


_CONFIGS: dict[tuple[tuple[str, int], ...], Any] = {}
"""Parsed ssh configs by (file, mtime) list: read again only when a file changes."""


def ssh_target(host: Host) -> SshTarget:
    """The effective SSH target of a host: what ``hosts list``, ``hosts check`` and a node's
    ``ipAddress`` and remote login settings report.

    The files the SSH transport honours (the host's ``ssh_config``, ``~/.ssh/config``,
    ``/etc/ssh/ssh_config``; :mod:`hpcbatch.providers.ssh`) are read with paramiko's
    ``SSHConfig`` (parsed once per file version). A host of another provider, or one
    whose config cannot be read, is its inventory fields.

    Parameters
    ----------
    host
        The inventory host.
    """
    plain = SshTarget(host.address, host.port, host.user, host.identity_file)
    if host.provider != "ssh":
        return plain
    import paramiko  # lazily: the inventory model is imported by light clients

    stamps: list[tuple[str, int]] = []
    for path in (host.ssh_config, "~/.ssh/config", "/etc/ssh/ssh_config"):
        if path is not None:
            file = Path(path).expanduser()
            try:
                stamps.append((str(file), file.stat().st_mtime_ns))
            except OSError:
                continue
    key = tuple(stamps)
    config = _CONFIGS.get(key)
    if config is None:
        config = paramiko.SSHConfig()
        try:
            for file_name, _ in stamps:
                with open(file_name, encoding="utf-8") as text:
                    config.parse(text)
        except (OSError, UnicodeError, paramiko.ConfigParseError):
            return plain  # the transport reports it when it connects
        if len(_CONFIGS) > 64:
            _CONFIGS.clear()
        _CONFIGS[key] = config
    found = config.lookup(host.address)
    try:
        port = host.port if host.port != 22 else int(found.get("port", 22))
    except ValueError:
        port = host.port
    files = found.get("identityfile") or []
    return SshTarget(found.get("hostname") or host.address, port,
                     host.user or found.get("user"), host.identity_file or (files[0] if files else None))


def load_inventory(path: str | os.PathLike[str]) -> list[Host]:
    """Read an inventory YAML file.

    Parameters
    ----------
    path
        The YAML file; relative key/config paths in it are resolved against
        its folder.

    Returns
    -------
    list of Host
        The hosts, in file order.

    Raises
    ------
    BadRequestError
        The file cannot be read, is not valid YAML, or names a host twice.
    InvalidPropertyValueError
        A host has a bad or unknown field (the message names it).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequestError(f"cannot read inventory {file}: {exc.strerror or exc}") from exc
    return parse_inventory(text, str(file), base_dir=file.resolve().parent)


def parse_inventory(
    text: str, source: str, *, base_dir: str | os.PathLike[str] | None = None
) -> list[Host]:
    """Parse inventory YAML text.

    Parameters
    ----------
    text
        YAML: ``{defaults: {...}, hosts: [...]}`` or a bare list of hosts.
    source
        Where the text comes from (a file name), used in error messages.
    base_dir
        Folder that relative ``identity_file``, ``ssh_config`` and
        ``known_hosts`` paths are resolved against; ``None`` keeps them as given.

    Returns
    -------
    list of Host
        The hosts, in document order, with the defaults applied.

    Raises
    ------
    BadRequestError
        Invalid YAML, a wrong document shape, or a duplicate host name
        (compared case-insensitively).
    InvalidPropertyValueError
        A bad or unknown field; its name reads like ``hosts[2].port`` and the
        reason names the host and the source.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequestError(f"inventory {source} is not valid YAML: {exc}") from exc
    if doc is None:
        doc = {"hosts": []}
    if isinstance(doc, list):
        doc = {"hosts": doc}
    if not isinstance(doc, dict) or set(doc) - {"defaults", "hosts"}:
        raise BadRequestError(
            f"inventory {source} must be a mapping with the keys 'defaults' (optional) "
            f"and 'hosts', or a list of hosts"
        )
    defaults = doc.get("defaults") or {}
    entries = doc.get("hosts") or []
    if not isinstance(defaults, dict):
        raise InvalidPropertyValueError("defaults", defaults, f"must be a mapping (in {source})")
    if not isinstance(entries, list):
        raise InvalidPropertyValueError("hosts", entries, f"must be a list (in {source})")
    for key in ("name", "address"):
        if key in defaults:
            raise InvalidPropertyValueError(
                f"defaults.{key}", defaults[key], f"each host needs its own {key} (in {source})"
            )

    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidPropertyValueError(
                f"hosts[{index}]", entry, f"must be a mapping of host fields (in {source})"
            )
        merged = {**defaults, **entry}
        if isinstance(defaults.get("env"), dict) and isinstance(entry.get("env"), dict):
            merged["env"] = {**defaults["env"], **entry["env"]}
        host = _validate_host(merged, index, entry, source)
        if base_dir is not None:
            host = _resolve_paths(host, Path(base_dir))
        key = host.name.lower()
        if key in seen:
            raise BadRequestError(
                f"inventory {source}: duplicate host name '{host.name}' "
                f"(hosts[{seen[key]}] and hosts[{index}])",
                values={"HostName": host.name},
            )
        seen[key] = index
        hosts.append(host)
    return hosts


def dump_inventory(hosts: Iterable[Host], path: str | os.PathLike[str]) -> None:
    """Write hosts as an inventory YAML file that :func:`load_inventory` reads back.

    The file is replaced atomically and gets mode 0644.

    Parameters
    ----------
    hosts
        The hosts to write; fields equal to their default are left out.
    path
        The YAML file to (over)write.
    """
    file = Path(path)
    doc = {"hosts": [h.model_dump(exclude_defaults=True) for h in hosts]}
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _validate_host(data: dict[str, Any], index: int, own: Mapping[str, Any], source: str) -> Host:
    """Build a Host, turning the first validation error into a named error."""
    try:
        return Host.model_validate(data)
    except pydantic.ValidationError as exc:
        # A missing address also leaves the name unset: report the address.
        errors = sorted(exc.errors(), key=lambda e: e["loc"] == ("name",) and e["type"] == "missing")
        error = errors[0]
        loc = error["loc"]
        field = ".".join(str(part) for part in loc) or "host"
        top = str(loc[0]) if loc else ""
        where = "defaults" if top in data and top not in own else f"hosts[{index}]"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = f"unknown field; valid fields are: {', '.join(Host.model_fields)}"
        label = own.get("name") or own.get("address")
        reason += f" (host {label}, in {source})" if label else f" (in {source})"
        raise InvalidPropertyValueError(f"{where}.{field}", error.get("input"), reason) from exc


def _resolve_paths(host: Host, base_dir: Path) -> Host:
    """Resolve the host's relative local paths against ``base_dir``."""
    update = {}
    for field in LOCAL_PATH_FIELDS:
        value = getattr(host, field)
        if value and not value.startswith("~") and not os.path.isabs(value):
            update[field] = str(base_dir / value)
    return host.model_copy(update=update) if update else host
