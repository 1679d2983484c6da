"""Batch resources as pydantic models: camelCase wire names, snake_case attributes.

Every model reads and writes the Batch REST JSON of api-version 2025-06-01
(``poolId``, ``targetDedicatedNodes``, ``executionInfo`` ...) while Python code
uses ``pool_id``, ``target_dedicated_nodes``, ``execution_info``. The ``*Spec``
models are the bodies clients send ("add" parameters); they forbid unknown
properties so a mistyped name is an error naming it. The resource models
(:class:`Pool`, :class:`Job`, :class:`Task`, :class:`ComputeNode`) are what
the service returns.

Validation follows Batch: IDs hold letters, digits, hyphens and underscores,
at most 64 characters (tasks: same), compared case-insensitively.

Input limits (``docs/security.md``, "Input hardening"): request bodies are
validated strictly, as Batch's typed REST API does: an integer property takes
a JSON integer only (not ``"3"``, ``3.0`` or ``true``), a boolean property a
JSON boolean only, and every integer is bounded (Batch's own bound where it
documents one, else a 32-bit ``int``, the type of Batch's REST schema).
Enumerations are closed. Strings are bounded: :data:`MAX_STRING_LENGTH` by
default, :data:`MAX_COMMAND_LINE_LENGTH` for command lines,
:data:`MAX_DISPLAY_NAME_LENGTH` for display names, :data:`MAX_METADATA_NAME_LENGTH`
/ :data:`MAX_METADATA_VALUE_LENGTH` for metadata. Durations are ISO 8601
strings (``PT5M``) between zero and Batch's "unlimited" (:data:`UNLIMITED`).
"""

from __future__ import annotations

import posixpath
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from hpcbatch.batch.errors import BadRequestError, InvalidPropertyValueError
from hpcbatch.batch.states import (
    AllocationState,
    ComputeNodeState,
    JobState,
    PoolState,
    TaskExecutionResult,
    TaskState,
)

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Batch's rule for pool, job, task and schedule IDs (matched whole: ``fullmatch``)."""

UNLIMITED = timedelta(days=10675199, seconds=10085, microseconds=477580)
"""Batch's "unlimited" duration (.NET ``TimeSpan.MaxValue``), e.g. for maxWallClockTime."""


INT32_MAX = 2**31 - 1
"""The largest value of Batch's ``int32`` REST properties."""

MAX_STRING_LENGTH = 32_768
"""The longest string any request property may hold unless a tighter bound applies
(hpcbatch's choice: Batch documents none; 32 KiB is Windows' command-line limit)."""

MAX_COMMAND_LINE_LENGTH = 32_768
"""The longest ``commandLine`` (characters). Batch documents no bound; a Windows
node's limit is 32,767 characters and a Linux node's one argument 128 KiB."""

MAX_DISPLAY_NAME_LENGTH = 1024
"""Batch: "The display name ... can contain any Unicode characters up to a maximum
length of 1024"."""

MAX_METADATA_NAME_LENGTH = 1024
"""The longest metadata ``name`` (hpcbatch's choice; Batch documents none)."""

MAX_METADATA_VALUE_LENGTH = 8192
"""The longest metadata ``value`` (hpcbatch's choice; Batch documents none)."""

MAX_SLOTS = 256
"""Batch's largest ``taskSlotsPerNode`` (so the largest useful ``requiredSlots``)."""

MIN_RESIZE_TIMEOUT = timedelta(minutes=5)
"""Batch: "The minimum value [of resizeTimeout] is 5 minutes"."""

FILE_MODE_PATTERN = re.compile(r"0?[0-7]{3}")
"""``fileMode``: octal permission bits (``"0770"``, ``"644"``); no setuid, setgid or
sticky bit."""


Int32 = Annotated[int, Strict(), Field(ge=-(2**31), le=INT32_MAX)]
"""A strict 32-bit integer (exit codes, ID ranges): a JSON integer, never a string, float
or boolean."""
Count = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]
"""A strict non-negative 32-bit integer (node counts)."""
Positive = Annotated[int, Strict(), Field(ge=1, le=INT32_MAX)]
"""A strict positive 32-bit integer (``numberOfInstances``)."""
RetryCount = Annotated[int, Strict(), Field(ge=-1, le=INT32_MAX)]
"""``maxTaskRetryCount``: -1 (retry without limit) up to a 32-bit integer."""
Slots = Annotated[int, Strict(), Field(ge=1, le=MAX_SLOTS)]
"""``taskSlotsPerNode``, ``requiredSlots``: 1 to 256."""
Priority = Annotated[int, Strict(), Field(ge=-1000, le=1000)]
"""A job's ``priority``: -1000 (lowest) to 1000 (highest)."""
Bool = Annotated[bool, Strict()]
"""A strict boolean: JSON ``true`` or ``false`` only."""


def _max_parallel(value: int) -> int:
    if value == 0:
        raise ValueError("must be -1 (no limit) or greater than 0")
    return value


MaxParallelTasks = Annotated[int, Strict(), Field(ge=-1, le=INT32_MAX),
                             AfterValidator(_max_parallel)]
"""A job's ``maxParallelTasks``: -1 (no limit) or 1 up to a 32-bit integer."""




def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


NoNul = AfterValidator(_no_nul)
"""Refuses a string with a NUL character (no process argument or path can hold one)."""

Text = Annotated[str, Field(max_length=MAX_STRING_LENGTH), NoNul]
"""A string of at most :data:`MAX_STRING_LENGTH` characters, no NUL."""
NonEmptyText = Annotated[str, Field(min_length=1, max_length=MAX_STRING_LENGTH), NoNul]
"""A non-empty :data:`Text`."""
CommandLine = Annotated[str, Field(min_length=1, max_length=MAX_COMMAND_LINE_LENGTH), NoNul]
"""A ``commandLine``: 1 to :data:`MAX_COMMAND_LINE_LENGTH` characters, no NUL."""
DisplayName = Annotated[str, Field(max_length=MAX_DISPLAY_NAME_LENGTH), NoNul]
"""A ``displayName``: up to 1024 characters."""
MetadataName = Annotated[str, Field(min_length=1, max_length=MAX_METADATA_NAME_LENGTH), NoNul]
"""A metadata ``name``: 1 to :data:`MAX_METADATA_NAME_LENGTH` characters."""
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE_LENGTH), NoNul]
"""A metadata ``value``: up to :data:`MAX_METADATA_VALUE_LENGTH` characters."""
ShortText = Annotated[str, Field(min_length=1, max_length=256), NoNul]
"""A name of at most 256 characters (user names, node IDs)."""


def _not_a_number(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        # ValueError, not TypeError: pydantic reports only ValueError as a validation error
        raise ValueError(  # noqa: TRY004
            "must be an ISO 8601 string (a duration such as 'PT5M', a time such as "
            "'2025-01-01T10:00:00Z'), not a number")
    return value


IsoString = BeforeValidator(_not_a_number)
"""Refuses a number where Batch takes an ISO 8601 duration or time (pydantic would read
it as seconds)."""


def within_unlimited(value: timedelta) -> timedelta:
    """Check a duration is 0 to :data:`UNLIMITED` (raises ValueError, for validators)."""
    if value < timedelta(0):
        raise ValueError("must not be negative")
    if value > UNLIMITED:
        if value - UNLIMITED <= timedelta(microseconds=1):
            # Batch writes it P10675199DT2H48M5.4775807S: the 0.7 µs round up to 1
            return UNLIMITED
        raise ValueError(f"must be at most {UNLIMITED} (Batch's unlimited duration)")
    return value


Duration = Annotated[timedelta, IsoString, Field(strict=False), AfterValidator(within_unlimited)]
"""A Batch duration: an ISO 8601 string (``PT5M``), 0 to :data:`UNLIMITED`."""


def _resize_timeout(value: timedelta) -> timedelta:
    if value < MIN_RESIZE_TIMEOUT:
        raise ValueError(f"must be at least 5 minutes (PT5M), not {value}")
    return value


ResizeTimeout = Annotated[Duration, AfterValidator(_resize_timeout)]
"""``resizeTimeout``: at least 5 minutes."""

RELEASE_MAX_WALL_CLOCK = timedelta(minutes=15)
"""A job release task's longest ``maxWallClockTime`` (Batch: 15 minutes, also its default)."""


def _release_wall_clock(value: timedelta) -> timedelta:
    if value > RELEASE_MAX_WALL_CLOCK:
        raise ValueError(
            f"must be at most 15 minutes (PT15M), not {value}; Batch rejects a longer "
            "job release task timeout with 400 (Bad Request)")
    return value


ReleaseWallClock = Annotated[Duration, AfterValidator(_release_wall_clock)]
"""A job release task's ``maxWallClockTime``: at most 15 minutes."""

Time = Annotated[datetime, IsoString, Field(strict=False)]
"""A wire time: an ISO 8601 string."""


def _file_mode(value: str) -> str:
    if not FILE_MODE_PATTERN.fullmatch(value):
        raise ValueError(
            "must be octal permission bits such as '0770' or '644' (3 octal digits, "
            "optionally after a leading 0; setuid, setgid and sticky bits are not allowed)")
    return value


FileMode = Annotated[str, AfterValidator(_file_mode)]
"""``fileMode``: octal permission bits (:data:`FILE_MODE_PATTERN`)."""


def validate_id(value: str, field: str = "id") -> str:
    """Check a Batch ID: letters, digits, ``-`` and ``_``, 1 to 64 characters.

    Parameters
    ----------
    value
        The ID as the client gave it (case is kept; uniqueness is case-insensitive).
    field
        Wire name of the property, for the error message.

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    InvalidPropertyValueError
        When the ID breaks the rule.
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidPropertyValueError(
            field,
            value,
            "an ID may contain only letters, digits, hyphens and underscores, "
            "and must be 1 to 64 characters long",
        )
    return value


def _id(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            "an ID may contain only letters, digits, hyphens and underscores, "
            "and must be 1 to 64 characters long"
        )
    return value


BatchId = Annotated[str, AfterValidator(_id)]


def _relative_path(value: str) -> str:
    norm = posixpath.normpath(value.replace("\\", "/"))
    if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise ValueError("filePath must be a relative path inside the task's working directory "
                         "(no absolute path, no '..')")
    return value


RelativePath = Annotated[Text, AfterValidator(_relative_path)]


class WireModel(BaseModel):
    """Base of every Batch wire model: camelCase aliases, snake_case attributes."""

    model_config = ConfigDict(
        defer_build=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        strict=True,
        str_max_length=MAX_STRING_LENGTH,
    )

    def to_wire(self) -> dict[str, Any]:
        """Return the Batch REST JSON of this object (camelCase, no null properties)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any, *, what: str | None = None) -> Any:
        """Parse Batch REST JSON, turning validation errors into Batch errors.

        Parameters
        ----------
        data
            The decoded JSON object.
        what
            Name of the body for messages (defaults to the class name).

        Raises
        ------
        InvalidPropertyValueError
            A property has a wrong value or type; the message names it by its
            wire path (``constraints.maxTaskRetryCount``).
        BadRequestError
            An unknown property (code ``InvalidRequestBody``), or a body that
            is not a JSON object.
        """
        if not isinstance(data, dict):
            raise BadRequestError(
                f"The request body for {what or cls.__name__} must be a JSON object."
            )
        try:
            # By the wire's names only: ``target_dedicated_nodes`` is an unknown property
            # here, as in Batch (the snake_case names are this package's, for its own code).
            return cls.model_validate(data, context=REQUEST_CONTEXT, by_alias=True, by_name=False)
        except ValidationError as exc:
            raise wire_error(exc) from None


REQUEST_CONTEXT: dict[str, Any] = {"request": True}
"""Validation context of a request body (:meth:`WireModel.from_wire`): rules that hold only
for what a client sends (a ``ContainerRegistry``'s ``password``, write-only, is required in a
request and absent from what the service returns)."""


def is_request(info: ValidationInfo) -> bool:
    """Whether a validator runs on a request body (:data:`REQUEST_CONTEXT`)."""
    return bool(info.context and info.context.get("request"))


def without_passwords(value: Any) -> Any:
    """A copy of wire JSON without its write-only ``password`` properties, at any depth.

    Batch never returns a password it was given (``userAccounts[].password``,
    ``containerConfiguration.containerRegistries[].password``,
    ``containerSettings.registry.password``, ...); Pool, Job, Job Schedule and Task -
    Get/List return their stored specification through this.

    Parameters
    ----------
    value
        A decoded JSON value.

    Returns
    -------
    Any
        ``value`` with every object's ``password`` key left out (shared where
        nothing changed).
    """
    if isinstance(value, dict):
        return {k: without_passwords(v) for k, v in value.items() if k != "password"}
    if isinstance(value, list):
        return [without_passwords(v) for v in value]
    return value


def _echo(loc: tuple[int | str, ...], value: Any) -> Any:
    """A refused value as an error may echo it: never a password."""
    if loc and loc[-1] == "password":
        return "***"
    return without_passwords(value)


def wire_error(exc: ValidationError) -> BadRequestError:
    """Turn the first pydantic error into a Batch error naming the wire property (a
    password is never echoed)."""
    err = exc.errors()[0]
    path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
    path = path.replace(".[", "[")
    if err["type"] == "extra_forbidden":
        return BadRequestError(
            f"The property {path} is not a known property of this request body.",
            code="InvalidRequestBody",
            values={"PropertyName": path},
        )
    if err["type"] == "missing":
        return BadRequestError(
            f"The required property {path} is missing.",
            code="MissingRequiredProperty",
            values={"PropertyName": path},
        )
    msg = err["msg"].removeprefix("Value error, ")
    return InvalidPropertyValueError(path, _echo(tuple(err["loc"]), err.get("input")), msg)


class Output(BaseModel):
    """Base of response models: they ignore unknown properties when read back."""

    model_config = ConfigDict(
        defer_build=True,
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True
    )

    def to_wire(self) -> dict[str, Any]:
        """Return the Batch REST JSON of this object (camelCase, no null properties)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------- common parts


ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable's name (matched whole)."""


def _env_name(value: str) -> str:
    if not ENV_NAME_PATTERN.fullmatch(value):
        raise ValueError("an environment variable name holds letters, digits and underscores "
                         "and does not start with a digit")
    return value


class EnvironmentSetting(WireModel):
    """An environment variable for a task (``EnvironmentSetting``)."""

    name: Annotated[str, Field(max_length=1024), AfterValidator(_env_name)]
    value: Text | None = None


class MetadataItem(WireModel):
    """A name-value pair of a pool's, job's or schedule's ``metadata`` (``MetadataItem``)."""

    name: MetadataName
    value: MetadataValue


class ResourceFile(WireModel):
    """A file to download to a node before a task runs (``ResourceFile``).

    Exactly one of ``http_url``, ``storage_container_url`` or
    ``auto_storage_container_name`` is given (a request with none or several is a 400
    ``InvalidPropertyValue``); ``file_path`` is relative to the
    task working directory.
    """

    auto_storage_container_name: str | None = None
    storage_container_url: str | None = None
    http_url: str | None = None
    blob_prefix: str | None = None
    file_path: RelativePath | None = None
    file_mode: FileMode | None = None
    identity_reference: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> ResourceFile:
        # checked on requests only: a stored task accepted earlier still reads back
        if not is_request(info):
            return self
        given = [name for name, value in (
            ("autoStorageContainerName", self.auto_storage_container_name),
            ("storageContainerUrl", self.storage_container_url),
            ("httpUrl", self.http_url)) if value is not None]
        if len(given) != 1:
            raise ValueError(
                "the autoStorageContainerName, storageContainerUrl and httpUrl properties are "
                "mutually exclusive and one of them must be specified"
                + (f" (given: {', '.join(given)})" if given else " (none given)"))
        return self


class TaskConstraints(WireModel):
    """Execution constraints of a task (``TaskConstraints``).

    ``max_task_retry_count``: 0 (default) no retries, -1 unlimited.
    ``retention_time``: how long the task directory is kept after completion.
    """

    max_wall_clock_time: Duration | None = None
    retention_time: Duration | None = None
    max_task_retry_count: RetryCount | None = None


class JobConstraints(WireModel):
    """Execution constraints of a job (``JobConstraints``)."""

    max_wall_clock_time: Duration | None = None
    max_task_retry_count: RetryCount | None = None


USER_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
"""The Linux account names a pool's ``userAccounts`` may use (``useradd``'s portable rule)."""


class AutoUserSpecification(WireModel):
    """The auto-user a task runs as (``AutoUserSpecification``).

    ``scope``: ``pool`` (default; the pool's common auto-user) or ``task`` (a
    user created for the task and removed after it). ``elevation_level``:
    ``nonadmin`` (default) or ``admin``.
    """

    scope: Literal["task", "pool"] | None = None
    elevation_level: Literal["nonadmin", "admin"] | None = None


class UserIdentity(WireModel):
    """The identity a task runs under (``UserIdentity``): ``username`` or ``autoUser``, not both.

    Omitted, a task runs as the pool's non-admin auto-user (see
    :mod:`hpcbatch.batch.identity`).
    """

    user_name: ShortText | None = Field(default=None, alias="username")
    auto_user: AutoUserSpecification | None = None

    @model_validator(mode="after")
    def _one_of(self) -> UserIdentity:
        if self.user_name is not None and self.auto_user is not None:
            raise ValueError("userIdentity: the username and autoUser properties are mutually "
                             "exclusive; specify one of them")
        return self


class LinuxUserConfiguration(WireModel):
    """Linux properties of a pool user account (``LinuxUserConfiguration``)."""

    uid: Annotated[int, Field(ge=1, le=2**31 - 2)] | None = None
    gid: Annotated[int, Field(ge=1, le=2**31 - 2)] | None = None
    ssh_private_key: str | None = None

    @model_validator(mode="after")
    def _both_ids(self) -> LinuxUserConfiguration:
        if (self.uid is None) != (self.gid is None):
            raise ValueError("linuxUserConfiguration: the uid and gid properties must be "
                             "specified together or not at all")
        return self


def _user_name(value: str) -> str:
    if not USER_NAME_PATTERN.fullmatch(value):
        raise ValueError("a user account name must be 1 to 32 lower-case letters, digits, "
                         "'_' or '-', starting with a letter or '_'")
    if value.startswith("_azbatch") or value == "root":
        raise ValueError(f"the user account name {value!r} is reserved (root, _azbatch*)")
    return value


class UserAccount(WireModel):
    """A user account created on every node of a pool (``UserAccount``)."""

    name: Annotated[str, AfterValidator(_user_name)]
    password: Annotated[str, Field(min_length=1)]
    elevation_level: Literal["nonadmin", "admin"] | None = None
    linux_user_configuration: LinuxUserConfiguration | None = None
    windows_user_configuration: dict[str, Any] | None = None


CONTAINER_TYPES = ("dockerCompatible", "criCompatible")
"""``containerConfiguration.type`` values a pool may give."""

DEFAULT_REGISTRY_SERVER = "docker.io"
"""The registry a ``ContainerRegistry`` without ``registryServer`` logs in to (Batch's default)."""

LOGIN_WORD_PATTERN = re.compile(r"[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]{0,1023}")
"""A registry server or user name as it reaches ``<runtime> login``: 1 to 1,024 characters,
not starting with ``-`` (never an option of the runtime), no white space or control
character (matched whole)."""


def _login_word(value: str) -> str:
    if not LOGIN_WORD_PATTERN.fullmatch(value):
        raise ValueError("must be 1 to 1024 characters, not start with '-' and hold no white "
                         "space or control character")
    return value


LoginWord = Annotated[str, AfterValidator(_login_word)]


class ContainerRegistry(WireModel):
    """A private container registry a node logs in to (``ContainerRegistry``).

    Used by a pool's ``virtualMachineConfiguration.containerConfiguration.containerRegistries``
    (every node logs in before it prefetches ``containerImageNames``) and a task's
    ``containerSettings.registry`` (its node logs in, then pulls the task's image,
    before the run). The node agent runs ``<runtime> login --username USER
    --password-stdin -- SERVER`` (:func:`hpcbatch.execution.images.login_argv`): the
    password goes to its standard input only.

    ``registry_server`` defaults to ``docker.io``; in a request ``user_name`` and
    ``password`` are required. ``password`` is write-only: the service keeps it in its
    store for the nodes and never returns it (:func:`without_passwords`), so it is
    optional in what the service returns. ``identity_reference`` (a managed identity
    of an Azure pool) is refused: nodes on your hosts have no Azure identity.
    """

    registry_server: LoginWord | None = None
    user_name: LoginWord | None = None
    password: Annotated[str, Field(min_length=1), NoNul] | None = Field(default=None, repr=False)
    identity_reference: dict[str, Any] | None = None

    @field_validator("identity_reference")
    @classmethod
    def _no_identity(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            raise ValueError("a managed identity cannot log in to a registry from hpcbatch "
                             "nodes (they have no Azure identity): give userName and password "
                             "instead")
        return value

    @model_validator(mode="after")
    def _credentials(self, info: ValidationInfo) -> ContainerRegistry:
        if is_request(info) and (self.user_name is None or self.password is None):
            missing = "userName" if self.user_name is None else "password"
            raise ValueError(f"{missing} is required: a registry is logged in to with "
                             "userName and password")
        return self


class TaskContainerSettings(WireModel):
    """``containerSettings`` of a task, start task, job manager, preparation or release task.

    The command line runs in ``image_name`` through the container runtime of the
    pool's ``containerConfiguration`` (:mod:`hpcbatch.execution.containers`), with
    the node root directory mounted at the same path and the task's environment
    passed. ``container_run_options`` are extra runtime options (split with POSIX
    shell rules); ``working_directory``: ``taskWorkingDirectory`` (default) or
    ``containerImageDefault``. ``registry`` (a private registry's credentials): the
    node logs in to it and pulls ``image_name`` before the run
    (:func:`hpcbatch.execution.images.pull_images`); its password is never returned.
    """

    image_name: Annotated[str, Field(min_length=1), NoNul]
    container_run_options: Annotated[str, NoNul] | None = None
    working_directory: Literal["taskWorkingDirectory", "containerImageDefault"] | None = None
    registry: ContainerRegistry | None = None

    @field_validator("image_name")
    @classmethod
    def _image(cls, value: str) -> str:
        if value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError("an image name must not start with '-' or contain white space")
        return value


ContainerSettings = TaskContainerSettings | None
"""The ``containerSettings`` property type."""

CONTAINER_CONFIGURATION = "virtualMachineConfiguration.containerConfiguration"
"""Wire path of a pool's container configuration, for errors."""


def container_registries(cc: dict[str, Any], *, request: bool = False) -> list[ContainerRegistry]:
    """The ``containerRegistries`` of a pool's ``containerConfiguration``, checked.

    Parameters
    ----------
    cc
        The ``containerConfiguration`` wire dict.
    request
        The configuration comes in a request (Pool - Add, Pool - Update, an auto pool
        specification): ``userName`` and ``password`` are required.

    Returns
    -------
    list of ContainerRegistry
        In order; empty when none is given.

    Raises
    ------
    InvalidPropertyValueError
        A registry breaks :class:`ContainerRegistry`'s rules; the error names the
        property (``virtualMachineConfiguration.containerConfiguration.containerRegistries[0].userName``)
        and never echoes a password.
    """
    items = cc.get("containerRegistries")
    if items is None:
        return []
    where = f"{CONTAINER_CONFIGURATION}.containerRegistries"
    if not isinstance(items, list):
        raise InvalidPropertyValueError(where, "***", "must be a list of ContainerRegistry")
    out = []
    for i, item in enumerate(items):
        try:
            # A request by the wire's names only (as WireModel.from_wire): ``user_name`` is
            # an unknown property; what the store holds reads back as it was accepted.
            out.append(ContainerRegistry.model_validate(
                item, context=REQUEST_CONTEXT, by_alias=True, by_name=False) if request
                else ContainerRegistry.model_validate(item))
        except ValidationError as exc:
            err = wire_error(exc)
            name = err.values.get("PropertyName", "")
            path = f"{where}[{i}]" + (f".{name}" if name else "")
            if isinstance(err, InvalidPropertyValueError):
                raise InvalidPropertyValueError(path, err.values["PropertyValue"],
                                                err.values["Reason"]) from None
            raise BadRequestError(err.message.replace(f" {name} ", f" {path} ", 1),
                                  code=err.code, values={"PropertyName": path}) from None
    return out


def check_container_configuration(vm_config: dict[str, Any] | None, *,
                                  request: bool = False) -> dict[str, Any] | None:
    """Check a pool's ``virtualMachineConfiguration.containerConfiguration``; return it or None.

    Parameters
    ----------
    vm_config
        The pool's ``virtualMachineConfiguration`` wire dict, or None.
    request
        The pool comes in a request: each registry needs ``userName`` and ``password``
        (:func:`container_registries`).

    Raises
    ------
    ValueError
        ``type`` is not ``dockerCompatible``/``criCompatible`` or ``containerImageNames``
        is not a list of names.
    InvalidPropertyValueError
        A ``containerRegistries`` item is refused (:func:`container_registries`).
    """
    cc = (vm_config or {}).get("containerConfiguration")
    if cc is None:
        return None
    if not isinstance(cc, dict):
        raise ValueError(  # noqa: TRY004 - pydantic reports a ValueError as a 400
            "virtualMachineConfiguration.containerConfiguration must be an object")
    unknown = sorted(set(cc) - {"type", "containerImageNames", "containerRegistries"})
    if unknown:
        raise ValueError(f"containerConfiguration: {unknown[0]!r} is not a known property")
    if cc.get("type") not in CONTAINER_TYPES:
        raise ValueError("containerConfiguration.type must be one of "
                         f"{', '.join(CONTAINER_TYPES)}")
    names = cc.get("containerImageNames")
    if names is not None and not (isinstance(names, list)
                                  and all(isinstance(n, str) and n for n in names)):
        raise ValueError("containerConfiguration.containerImageNames must be a list of "
                         "image names")
    container_registries(cc, request=request)
    return cc


def check_pool_runs_containers(settings: TaskContainerSettings | None,
                               pool: PoolSpecification | None, pool_id: str | None,
                               name: str = "containerSettings") -> None:
    """Refuse ``containerSettings`` for a known pool that does not enable containers.

    Parameters
    ----------
    settings
        The task's (job manager's, preparation or release task's) container settings.
    pool
        Its pool's specification, or None when the pool is not known yet (the
        node agent then fails the task with ``ContainerConfigurationMissing``).
    pool_id
        The pool's ID, for the message.
    name
        The property's wire path, for the error.

    Raises
    ------
    InvalidPropertyValueError
        ``settings`` given and ``pool`` has no ``containerConfiguration``.
    """
    if settings is None or pool is None:
        return
    if check_container_configuration(pool.virtual_machine_configuration) is None:
        raise InvalidPropertyValueError(
            name, settings.image_name,
            f"the pool {pool_id} has no virtualMachineConfiguration.containerConfiguration: "
            "a task runs in a container only on a pool that enables containers")


class StartTask(WireModel):
    """A pool's start task (``StartTask``): runs on every node as it joins or restarts."""

    command_line: CommandLine
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    user_identity: UserIdentity | None = None
    max_task_retry_count: RetryCount | None = None
    wait_for_success: Bool | None = None
    container_settings: ContainerSettings = None


class TaskSchedulingPolicy(WireModel):
    """How tasks are spread over a pool's nodes (``TaskSchedulingPolicy``)."""

    node_fill_type: Literal["spread", "pack"] = "spread"
    job_default_order: Literal["none", "creationtime"] | None = None


class MultiInstanceSettings(WireModel):
    """Settings of a multi-instance (MPI) task (``MultiInstanceSettings``)."""

    number_of_instances: Positive | None = None
    coordination_command_line: CommandLine | None = None
    common_resource_files: list[ResourceFile] | None = None


class ExitOptions(WireModel):
    """What Batch does when a task ends a given way (``ExitOptions``)."""

    job_action: Literal["none", "disable", "terminate"] | None = None
    dependency_action: Literal["satisfy", "block"] | None = None


class ExitCodeMapping(WireModel):
    code: Int32
    exit_options: ExitOptions


class ExitCodeRangeMapping(WireModel):
    start: Int32
    end: Int32
    exit_options: ExitOptions


class ExitConditions(WireModel):
    """A task's exit conditions (``ExitConditions``)."""

    exit_codes: list[ExitCodeMapping] | None = None
    exit_code_ranges: list[ExitCodeRangeMapping] | None = None
    pre_processing_error: ExitOptions | None = None
    file_upload_error: ExitOptions | None = None
    default: ExitOptions | None = None


class TaskIdRange(WireModel):
    start: Int32
    end: Int32


class TaskDependencies(WireModel):
    """Tasks a task depends on (``TaskDependencies``)."""

    task_ids: list[Annotated[str, Field(max_length=64)]] | None = None
    task_id_ranges: list[TaskIdRange] | None = None


UPLOAD_CONDITIONS = ("taskSuccess", "taskFailure", "taskCompletion")
"""``OutputFileUploadCondition`` values (the node agent compares them case-insensitively)."""


def _known_properties(value: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """Refuse a wire object that is not an object or has a property ``known`` lacks."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")  # noqa: TRY004 - pydantic: a 400
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a known property of {where} "
                         f"(known: {', '.join(known)})")
    return value


class OutputFile(WireModel):
    """A file to upload after a task ends (``OutputFile``).

    ``destination`` and ``upload_options`` are kept as wire dicts (what the node agent
    reads); in a request they hold Batch's properties only, by their camelCase names
    (``destination.container``: ``path``, ``containerUrl``, ``identityReference``,
    ``uploadHeaders``; ``uploadOptions.uploadCondition``: one of
    :data:`UPLOAD_CONDITIONS`), else a 400 ``InvalidPropertyValue`` naming the property.
    """

    file_pattern: NonEmptyText
    destination: dict[str, Any]
    upload_options: dict[str, Any]

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # checked on requests only: a stored task accepted earlier still reads back
        if is_request(info):
            _known_properties(value, "destination", ("container",))
            container = _known_properties(
                value.get("container", {}), "destination.container",
                ("path", "containerUrl", "identityReference", "uploadHeaders"))
            for name in ("path", "containerUrl"):
                if not isinstance(container.get(name, ""), str):  # a ValueError is a 400
                    raise ValueError(f"destination.container.{name} must be a string")  # noqa: TRY004
        return value

    @field_validator("upload_options")
    @classmethod
    def _upload_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if is_request(info):
            _known_properties(value, "uploadOptions", ("uploadCondition",))
            condition = value.get("uploadCondition", UPLOAD_CONDITIONS[2])
            if not (isinstance(condition, str)
                    and condition.lower() in {c.lower() for c in UPLOAD_CONDITIONS}):
                raise ValueError("uploadOptions.uploadCondition must be one of "
                                 f"{', '.join(UPLOAD_CONDITIONS)}")
        return value


class ApplicationPackageReference(WireModel):
    application_id: str
    version: str | None = None


class AffinityInformation(WireModel):
    affinity_id: str


# ---------------------------------------------------------------------------- pools


class PoolSpecification(WireModel):
    """A pool's specification without its ID (``PoolSpecification``, the ``pool`` of an
    ``autoPoolSpecification``); :class:`PoolSpec` adds the ID (``PoolAddParameter``).

    ``vm_size`` selects inventory hosts by label (``any`` matches every host);
    ``target_dedicated_nodes`` is how many hosts to take, ``target_low_priority_nodes``
    how many of the hosts marked ``low_priority`` in the inventory. An
    ``imageReference`` in ``virtualMachineConfiguration`` selects hosts by
    operating system. Other Azure-only properties (``cloudServiceConfiguration``,
    network and identity settings) are accepted and ignored.
    """

    display_name: DisplayName | None = None
    vm_size: Annotated[str, Field(min_length=1, max_length=1024)]
    target_dedicated_nodes: Count | None = None
    target_low_priority_nodes: Count | None = None
    enable_auto_scale: Bool | None = None
    auto_scale_formula: str | None = None
    auto_scale_evaluation_interval: Duration | None = None
    resize_timeout: ResizeTimeout | None = None
    enable_inter_node_communication: Bool | None = None
    task_slots_per_node: Slots | None = None
    max_tasks_per_node: Slots | None = None
    task_scheduling_policy: TaskSchedulingPolicy | None = None
    start_task: StartTask | None = None
    application_package_references: list[ApplicationPackageReference] | None = None
    metadata: list[MetadataItem] | None = None
    user_accounts: list[UserAccount] | None = None
    # Azure-only properties, accepted for wire compatibility.
    virtual_machine_configuration: dict[str, Any] | None = None
    cloud_service_configuration: dict[str, Any] | None = None
    network_configuration: dict[str, Any] | None = None
    certificate_references: list[dict[str, Any]] | None = None
    mount_configuration: list[dict[str, Any]] | None = None
    target_node_communication_mode: str | None = None
    upgrade_policy: dict[str, Any] | None = None
    resource_tags: dict[str, str] | None = None
    identity: dict[str, Any] | None = None
    application_licenses: list[str] | None = None

    @model_validator(mode="after")
    def _unique_accounts(self) -> PoolSpecification:
        names = [a.name if isinstance(a, UserAccount) else a.get("name")
                 for a in self.user_accounts or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"userAccounts: the name {dup[0]!r} is given more than once")
        return self

    @model_validator(mode="after")
    def _containers(self, info: ValidationInfo) -> PoolSpecification:
        cc = check_container_configuration(self.virtual_machine_configuration,
                                           request=is_request(info))
        if cc is None and self.start_task is not None \
                and self.start_task.container_settings is not None:
            raise ValueError(
                "startTask.containerSettings needs a pool whose virtualMachineConfiguration "
                "has a containerConfiguration")
        return self

    @property
    def slots(self) -> int:
        """Task slots per node (``taskSlotsPerNode``, or the older ``maxTasksPerNode``), default 1."""
        return self.task_slots_per_node or self.max_tasks_per_node or 1


class PoolSpec(PoolSpecification):
    """The body of "Add a pool" (``POST /pools``, ``PoolAddParameter``): a
    :class:`PoolSpecification` with the pool's ``id``."""

    id: BatchId


class PoolEnableAutoScale(WireModel):
    """The body of "Enable automatic scaling for a pool" (``PoolEnableAutoScaleParameter``)."""

    auto_scale_formula: str | None = None
    auto_scale_evaluation_interval: Duration | None = None


class PoolEvaluateAutoScale(WireModel):
    """The body of "Evaluate an automatic scaling formula" (``PoolEvaluateAutoScaleParameter``)."""

    auto_scale_formula: str


class ResizeError(Output):
    code: str
    message: str
    values: list[dict[str, str]] | None = None


class ResourceFields(BaseModel):
    """Properties the service adds to every resource it returns (pool, job, task)."""

    model_config = ConfigDict(defer_build=True, alias_generator=to_camel, populate_by_name=True,
                              extra="ignore", use_enum_values=True)

    id: str  # as the service returns it (schedule-created jobs contain ':')
    url: str | None = None
    e_tag: str | None = Field(default=None, alias="eTag")
    last_modified: datetime | None = None
    creation_time: datetime | None = None
    state_transition_time: datetime | None = None


class Pool(ResourceFields, PoolSpec):
    """A pool as the service returns it (``CloudPool``)."""

    model_config = ConfigDict(defer_build=True, extra="ignore", strict=False)

    state: PoolState = PoolState.active
    allocation_state: AllocationState = AllocationState.steady
    allocation_state_transition_time: datetime | None = None
    current_dedicated_nodes: int = 0
    current_low_priority_nodes: int = 0
    resize_errors: list[ResizeError] | None = None
    auto_scale_run: dict[str, Any] | None = None
    user_accounts: list[dict[str, Any]] | None = None  # type: ignore[assignment]
    """As returned: without passwords (write-only)."""


class PoolResize(WireModel):
    """The body of "Resize a pool" (``PoolResizeParameter``)."""

    target_dedicated_nodes: Count | None = None
    target_low_priority_nodes: Count | None = None
    resize_timeout: ResizeTimeout | None = None
    node_deallocation_option: (
        Literal["requeue", "terminate", "taskcompletion", "retaineddata"] | None
    ) = None


class NodeRemove(WireModel):
    """The body of "Remove nodes from a pool" (``NodeRemoveParameter``): 1 to 100 node IDs."""

    node_list: Annotated[list[ShortText], Field(min_length=1, max_length=100)]
    resize_timeout: ResizeTimeout | None = None
    node_deallocation_option: (
        Literal["requeue", "terminate", "taskcompletion", "retaineddata"] | None
    ) = None


class ComputeNodeError(Output):
    code: str
    message: str
    error_details: list[dict[str, str]] | None = None


class TaskFailureInformation(Output):
    """Why a task failed (``TaskFailureInformation``): category ``usererror|servererror``."""

    category: Literal["usererror", "servererror"]
    code: str | None = None
    message: str | None = None
    details: list[dict[str, str]] | None = None


class StartTaskInformation(Output):
    """The start task's state on a node (``StartTaskInformation``)."""

    state: Literal["running", "completed"]
    start_time: datetime
    end_time: datetime | None = None
    exit_code: int | None = None
    failure_info: TaskFailureInformation | None = None
    retry_count: int = 0
    last_retry_time: datetime | None = None
    result: TaskExecutionResult | None = None


class TaskInformation(Output):
    """A task running on a node (``TaskInformation``)."""

    task_url: str | None = None
    job_id: str
    task_id: str
    subtask_id: int | None = None
    task_state: TaskState
    execution_info: dict[str, Any] | None = None


class ComputeNode(Output):
    """A compute node (``ComputeNode``). ``id`` is the inventory host name."""

    id: str
    url: str | None = None
    state: ComputeNodeState
    scheduling_state: Literal["enabled", "disabled"] = "enabled"
    state_transition_time: datetime | None = None
    last_boot_time: datetime | None = None
    allocation_time: datetime | None = None
    ip_address: str | None = None
    affinity_id: str | None = None
    vm_size: str | None = None
    total_tasks_run: int = 0
    running_tasks_count: int = 0
    running_task_slots_count: int = 0
    total_tasks_succeeded: int = 0
    recent_tasks: list[TaskInformation] | None = None
    start_task: StartTask | None = None
    start_task_info: StartTaskInformation | None = None
    errors: list[ComputeNodeError] | None = None
    is_dedicated: bool = True
    endpoint_configuration: dict[str, Any] | None = None
    node_agent_info: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- jobs


AUTO_POOL_ID_PREFIX_MAX = 20
"""Batch: "The prefix can be up to 20 characters long" (``autoPoolIdPrefix``)."""


def _auto_pool_prefix(value: str) -> str:
    if not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{AUTO_POOL_ID_PREFIX_MAX}}}", value):
        raise ValueError(f"the prefix may contain only letters, digits, hyphens and "
                         f"underscores, and must be 1 to {AUTO_POOL_ID_PREFIX_MAX} characters long")
    return value


def _lifetime(value: str) -> str:
    """``poolLifetimeOption``, case-insensitive as Batch reads enums, kept lower-case."""
    if not isinstance(value, str) or value.lower() not in ("job", "jobschedule"):
        raise ValueError("allowed values are job, jobschedule")
    return value.lower()


class AutoPoolSpecification(WireModel):
    """A pool the service creates for a job or job schedule (``AutoPoolSpecification``).

    Attributes
    ----------
    auto_pool_id_prefix
        Prefix of the pool's generated ID (up to 20 letters, digits, ``-``, ``_``).
    pool_lifetime_option
        ``job`` (a pool per job, deleted when the job completes or is deleted) or
        ``jobschedule`` (one pool for a schedule's lifetime; schedules only).
    keep_alive
        Keep the pool when its lifetime ends (the user deletes it).
    pool
        The pool's :class:`PoolSpecification`, validated as Pool - Add validates.
    """

    auto_pool_id_prefix: Annotated[str, AfterValidator(_auto_pool_prefix)] | None = None
    pool_lifetime_option: Annotated[str, AfterValidator(_lifetime)]
    keep_alive: Bool | None = None
    pool: PoolSpecification


class PoolInformation(WireModel):
    """Which pool a job runs on (``PoolInformation``): an existing pool's ``poolId``, or an
    ``autoPoolSpecification`` the service creates a pool from; exactly one of them."""

    pool_id: BatchId | None = None
    auto_pool_specification: AutoPoolSpecification | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PoolInformation:
        if (self.pool_id is None) == (self.auto_pool_specification is None):
            raise ValueError("specify either poolId or autoPoolSpecification, but not both")
        return self


class AuthenticationTokenSettings(WireModel):
    """A token the task may use for Batch operations (``AuthenticationTokenSettings``).

    ``access: ["job"]`` gives the task ``AZ_BATCH_AUTHENTICATION_TOKEN``, a token
    accepted as ``Authorization: Bearer`` for every operation on the task's job
    and nothing else (:mod:`hpcbatch.batch.tokens`). Without ``job`` in
    ``access`` no token is given.
    """

    access: list[Literal["job"]] | None = None


class JobManagerTask(WireModel):
    """A job's job manager task (``JobManagerTask``)."""

    id: BatchId
    display_name: DisplayName | None = None
    command_line: CommandLine
    resource_files: list[ResourceFile] | None = None
    output_files: list[OutputFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    required_slots: Slots | None = None
    kill_job_on_completion: Bool | None = None
    user_identity: UserIdentity | None = None
    run_exclusive: Bool | None = None
    application_package_references: list[ApplicationPackageReference] | None = None
    authentication_token_settings: AuthenticationTokenSettings | None = None
    allow_low_priority_node: Bool | None = None
    container_settings: ContainerSettings = None


class JobPreparationTask(WireModel):
    """A job's preparation task (``JobPreparationTask``)."""

    id: BatchId | None = None
    command_line: CommandLine
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    wait_for_success: Bool | None = None
    user_identity: UserIdentity | None = None
    rerun_on_node_reboot_after_success: Bool | None = None
    container_settings: ContainerSettings = None


class JobReleaseTask(WireModel):
    """A job's release task (``JobReleaseTask``)."""

    id: BatchId | None = None
    command_line: CommandLine
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    max_wall_clock_time: ReleaseWallClock | None = None
    retention_time: Duration | None = None
    user_identity: UserIdentity | None = None
    container_settings: ContainerSettings = None


class JobSpec(WireModel):
    """The body of "Add a job" (``POST /jobs``, ``JobAddParameter``)."""

    id: BatchId
    display_name: DisplayName | None = None
    priority: Priority | None = None
    max_parallel_tasks: MaxParallelTasks | None = None
    allow_task_preemption: Bool | None = None
    constraints: JobConstraints | None = None
    job_manager_task: JobManagerTask | None = None
    job_preparation_task: JobPreparationTask | None = None
    job_release_task: JobReleaseTask | None = None
    common_environment_settings: list[EnvironmentSetting] | None = None
    pool_info: PoolInformation
    on_all_tasks_complete: Literal["noaction", "terminatejob"] | None = None
    on_task_failure: Literal["noaction", "performexitoptionsjobaction"] | None = None
    metadata: list[MetadataItem] | None = None
    uses_task_dependencies: Bool | None = None
    network_configuration: dict[str, Any] | None = None


class JobExecutionInformation(Output):
    """When a job started and ended (``JobExecutionInformation``)."""

    start_time: datetime
    end_time: datetime | None = None
    pool_id: str | None = None
    scheduling_error: dict[str, Any] | None = None
    terminate_reason: str | None = None


class Job(ResourceFields, JobSpec):
    """A job as the service returns it (``CloudJob``)."""

    model_config = ConfigDict(defer_build=True, extra="ignore", strict=False)

    state: JobState = JobState.active
    previous_state: JobState | None = None
    previous_state_transition_time: datetime | None = None
    execution_info: JobExecutionInformation | None = None


class JobPatch(WireModel):
    """The body of "Update a job" (``PATCH /jobs/{jobId}``, ``JobPatchParameter``)."""

    network_configuration: dict[str, Any] | None = None
    priority: Priority | None = None
    max_parallel_tasks: MaxParallelTasks | None = None
    allow_task_preemption: Bool | None = None
    on_all_tasks_complete: Literal["noaction", "terminatejob"] | None = None
    constraints: JobConstraints | None = None
    pool_info: PoolInformation | None = None
    metadata: list[MetadataItem] | None = None


class JobTerminate(WireModel):
    """The body of "Terminate a job" (``JobTerminateParameter``)."""

    terminate_reason: DisplayName | None = None


class JobDisable(WireModel):
    """The body of "Disable a job" (``JobDisableParameter``)."""

    disable_tasks: Literal["requeue", "terminate", "wait"]


# ---------------------------------------------------------------------------- tasks


class TaskSpec(WireModel):
    """The body of "Add a task" (``POST /jobs/{jobId}/tasks``, ``TaskAddParameter``)."""

    id: BatchId
    display_name: DisplayName | None = None
    command_line: CommandLine
    resource_files: list[ResourceFile] | None = None
    output_files: list[OutputFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    affinity_info: AffinityInformation | None = None
    constraints: TaskConstraints | None = None
    required_slots: Slots | None = None
    user_identity: UserIdentity | None = None
    multi_instance_settings: MultiInstanceSettings | None = None
    depends_on: TaskDependencies | None = None
    exit_conditions: ExitConditions | None = None
    application_package_references: list[ApplicationPackageReference] | None = None
    authentication_token_settings: AuthenticationTokenSettings | None = None
    container_settings: ContainerSettings = None


class TaskCollection(WireModel):
    """The body of "Add a task collection" (``TaskAddCollectionParameter``): 1 to 100 tasks."""

    value: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ComputeNodeInformation(Output):
    """Where a task ran (``ComputeNodeInformation``)."""

    affinity_id: str | None = None
    node_url: str | None = None
    pool_id: str | None = None
    node_id: str | None = None
    task_root_directory: str | None = None
    task_root_directory_url: str | None = None


class TaskExecutionInformation(Output):
    """How a task ran (``TaskExecutionInformation``)."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    failure_info: TaskFailureInformation | None = None
    retry_count: int = 0
    last_retry_time: datetime | None = None
    requeue_count: int = 0
    last_requeue_time: datetime | None = None
    result: TaskExecutionResult | None = None


class Task(ResourceFields, TaskSpec):
    """A task as the service returns it (``CloudTask``)."""

    model_config = ConfigDict(defer_build=True, extra="ignore", strict=False)

    state: TaskState = TaskState.active
    previous_state: TaskState | None = None
    previous_state_transition_time: datetime | None = None
    execution_info: TaskExecutionInformation | None = None
    node_info: ComputeNodeInformation | None = None


class TaskAddResult(Output):
    """One entry of the "Add a task collection" reply (``TaskAddResult``)."""

    status: Literal["success", "clienterror", "servererror"]
    task_id: str
    e_tag: str | None = Field(default=None, alias="eTag")
    last_modified: datetime | None = None
    location: str | None = None
    error: dict[str, Any] | None = None


class NodeFile(Output):
    """A file or directory on a node (``NodeFile``); ``name`` is relative to the task dir."""

    name: str
    url: str | None = None
    is_directory: bool = False
    properties: dict[str, Any] | None = None


class SubtaskInformation(Output):
    """A subtask (instance 1..N-1) of a multi-instance task (``SubtaskInformation``)."""

    id: int
    node_info: ComputeNodeInformation | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    failure_info: TaskFailureInformation | None = None
    state: Literal["preparing", "running", "completed"] | None = None
    state_transition_time: datetime | None = None
    previous_state: Literal["preparing", "running", "completed"] | None = None
    previous_state_transition_time: datetime | None = None
    result: TaskExecutionResult | None = None


# ------------------------------------------------------------------- statistics


class JobStatistics(Output):
    """Resource usage of a job's tasks, or of every job of the account (``JobStatistics``).

    Times are wire strings; durations serialise as ISO 8601 (``PT1.5S``); the int64
    counters are strings, as api-version 2025-06-01 sends them.
    """

    url: str
    start_time: str
    last_update_time: str
    user_cpu_time: timedelta = Field(alias="userCPUTime")
    kernel_cpu_time: timedelta = Field(alias="kernelCPUTime")
    wall_clock_time: timedelta
    read_iops: str = Field(alias="readIOps")
    write_iops: str = Field(alias="writeIOps")
    read_io_gib: float = Field(alias="readIOGiB")
    write_io_gib: float = Field(alias="writeIOGiB")
    num_succeeded_tasks: str
    num_failed_tasks: str
    num_task_retries: str
    wait_time: timedelta


class PoolUsageStatistics(Output):
    """A pool's core time (``UsageStatistics``)."""

    start_time: str
    last_update_time: str
    dedicated_core_time: timedelta


class ResourceStatistics(Output):
    """A pool's resource use (``ResourceStatistics``); unmeasured figures are left out."""

    start_time: str
    last_update_time: str
    avg_cpu_percentage: float = Field(alias="avgCPUPercentage")
    avg_memory_gib: float | None = Field(default=None, alias="avgMemoryGiB")
    peak_memory_gib: float | None = Field(default=None, alias="peakMemoryGiB")
    avg_disk_gib: float | None = Field(default=None, alias="avgDiskGiB")
    peak_disk_gib: float | None = Field(default=None, alias="peakDiskGiB")
    disk_read_iops: str = Field(alias="diskReadIOps")
    disk_write_iops: str = Field(alias="diskWriteIOps")
    disk_read_gib: float = Field(alias="diskReadGiB")
    disk_write_gib: float = Field(alias="diskWriteGiB")
    network_read_gib: float | None = Field(default=None, alias="networkReadGiB")
    network_write_gib: float | None = Field(default=None, alias="networkWriteGiB")


class PoolStatistics(Output):
    """A pool's, or every pool's of the account, statistics (``PoolStatistics``)."""

    url: str
    start_time: str
    last_update_time: str
    usage_stats: PoolUsageStatistics | None = None
    resource_stats: ResourceStatistics | None = None


class PoolUsageMetrics(Output):
    """One pool's core hours in one aggregation interval (``PoolUsageMetrics``)."""

    pool_id: str
    start_time: str
    end_time: str
    vm_size: str
    total_core_hours: float
