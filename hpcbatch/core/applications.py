"""Application packages ("Application - List/Get", package create/delete, default versions)."""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch.errors import (
    ConflictError,
    InvalidPropertyValueError,
    not_found,
)
from hpcbatch.batch.models import (
    validate_id,
)
from hpcbatch.batch.wire import utcnow
from hpcbatch.core.context import ServiceContext
from hpcbatch.execution.packages import PackageRef
from hpcbatch.storage.fs import Storage, open_storage
from hpcbatch.store.database import (
    Store,
    app_packages,
    applications,
    mappings,
)

log = logging.getLogger(__name__)


class Applications:
    """The account's applications and their package versions, kept in storage.

    Parameters
    ----------
    ctx
        The service context.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._apps: dict[str, dict[str, Any]] | None = None

    def _load_apps(self) -> dict[str, dict[str, Any]]:
        if self._apps is None:
            apps: dict[str, dict[str, Any]] = {}
            with self.ctx.store.read() as conn:
                for r in mappings(conn.execute(sa.select(applications))):
                    apps[r["key"]] = {"id": r["id"], "displayName": r["display_name"],
                                      "default": r["default_version"], "versions": {}}
                for r in mappings(conn.execute(sa.select(app_packages))):
                    apps[r["app_key"]]["versions"][r["version"]] = dict(r)
            self._apps = apps
        return self._apps

    def _app_storage(self) -> Storage:
        if self.ctx.storage is None:
            raise ConflictError("This service has no storage for application packages.",
                                code="AutoStorageNotConfigured")
        return open_storage(self.ctx.storage.url, self.ctx.storage.options)

    def create_application_package(self, application_id: str, version: str, data: bytes) -> None:
        """Upload an application package version (a zip); replaces an existing one.

        Mirrors the Batch management operations "Application Package - Create"
        and "- Activate" in one step. The first version becomes the default.

        Raises
        ------
        InvalidPropertyValueError
            A bad application ID or version, or data that is not a zip archive.
        """
        validate_id(application_id, "applicationName")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", version):
            raise InvalidPropertyValueError("version", version, "a version holds letters, digits, "
                                            "'.', '-' and '_', at most 64 characters")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise InvalidPropertyValueError("package", f"{len(data)} bytes",
                                            "an application package must be a zip archive")
        key = application_id.lower()
        storage_key = f"applications/{key}/{version}.zip"
        self._app_storage().put_bytes(data, storage_key)
        with self.ctx.store.begin() as conn:
            app = Store.fetch_one(conn, applications, key=key)
            if app is None:
                conn.execute(applications.insert().values(key=key, id=application_id,
                                                          default_version=version))
            conn.execute(app_packages.delete().where(app_packages.c.app_key == key,
                                                     app_packages.c.version == version))
            conn.execute(app_packages.insert().values(
                app_key=key, version=version, storage_key=storage_key, size_bytes=len(data),
                last_activation_time=utcnow()))
        self._apps = None

    def set_default_version(self, application_id: str, version: str | None) -> None:
        """Set (or clear, with None) an application's default version ("Application - Update")."""
        app = self._application(application_id)
        if version is not None and version not in app["versions"]:
            raise not_found("ApplicationPackage", f"{application_id} {version}")
        with self.ctx.store.begin() as conn:
            Store.update(conn, applications, {"key": application_id.lower()},
                         default_version=version)
        self._apps = None

    def delete_application_package(self, application_id: str, version: str) -> None:
        """Delete a package version ("Application Package - Delete")."""
        app = self._application(application_id)
        if version not in app["versions"]:
            raise not_found("ApplicationPackage", f"{application_id} {version}")
        self._app_storage().delete(app["versions"][version]["storage_key"])
        with self.ctx.store.begin() as conn:
            conn.execute(app_packages.delete().where(
                app_packages.c.app_key == application_id.lower(), app_packages.c.version == version))
            if app["default"] == version:
                Store.update(conn, applications, {"key": application_id.lower()},
                             default_version=None)
        self._apps = None

    def _application(self, application_id: str) -> dict[str, Any]:
        app = self._load_apps().get(application_id.lower())
        if app is None:
            raise not_found("Application", application_id)
        return app

    @staticmethod
    def _application_wire(app: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": app["id"], "displayName": app["displayName"] or app["id"],
                "versions": sorted(app["versions"]), "defaultVersion": app["default"]}

    def list_applications(self) -> list[dict[str, Any]]:
        """List applications ("Application - List"): id, displayName, versions."""
        return [self._application_wire(a) for _, a in sorted(self._load_apps().items())]

    def get_application(self, application_id: str) -> dict[str, Any]:
        """Return one application ("Application - Get"). Raises ``ApplicationNotFound``."""
        return self._application_wire(self._application(application_id))

    def resolve_packages(self, refs: Iterable[Mapping[str, Any]], field: str
                         ) -> list[PackageRef]:
        """Resolve ``applicationPackageReferences`` to package versions.

        Raises
        ------
        ConflictError
            ``InvalidApplicationPackageReferences`` naming the unknown
            application, version, or an application without a default version.
        """
        out = []
        for ref in refs:
            app = self._load_apps().get(str(ref.get("applicationId", "")).lower())
            version = ref.get("version") or (app["default"] if app else None)
            if app is None or version is None or version not in app["versions"]:
                what = ("no default version" if app is not None and not ref.get("version")
                        else "does not exist")
                raise ConflictError(
                    f"{field}: application {ref.get('applicationId')}"
                    f"{' version ' + str(ref.get('version')) if ref.get('version') else ''} "
                    f"{what}.", code="InvalidApplicationPackageReferences",
                    values={"PropertyName": field})
            out.append(PackageRef(app["id"], version, app["versions"][version]["storage_key"],
                                  is_default=not ref.get("version")))
        return out
