"""Account-level operations of :class:`~hpcbatch.client.sdk.BatchClient`: the dashboard
sign-in, the inventory and supported images, application packages, certificates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcbatch.client.rest import Json, RestClient


class AccountOperations(RestClient):
    """Dashboard, inventory, application and certificate operations (a mixin of ``BatchClient``)."""

    # ---------------------------------------------------------------- dashboard

    def dashboard_sign_in_url(self) -> str:
        """Mint a one-time sign-in link to the service's web dashboard (hpcbatch's own).

        ``POST /dashboard/tokens``, signed with the account key like every
        request: only a holder of the key gets a link. The link signs a browser
        in once, within 5 minutes, and sets the dashboard's session cookie.

        Returns
        -------
        str
            ``{endpoint}/dashboard/signin?token=...``.

        Raises
        ------
        BatchError
            ``AuthenticationFailed`` (a wrong key) or another service error.
        """
        url: str = self._request("POST", "/dashboard/tokens").json()["url"]
        return url

    # ---------------------------------------------------------------- inventory

    def add_hosts(self, hosts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add hosts to the service's inventory (see :class:`hpcbatch.providers.inventory.Host`)."""
        body = [h.model_dump(mode="json") if hasattr(h, "model_dump") else dict(h) for h in hosts]
        return self._request("POST", "/inventory/hosts", body={"hosts": body}).json()["value"]

    def check_hosts(self, pool_id: str | None = None,
                    launcher: str | None = None) -> dict[str, Any]:
        """Preflight the inventory's hosts (hpcbatch extension ``POST /inventory/hosts/check``).

        Parameters
        ----------
        pool_id
            Only this pool's hosts, and ssh between each pair of its nodes when
            it has inter-node communication; None: every host.
        launcher
            The MPI launcher to look for on the task PATH (default ``mpiexec``).

        Returns
        -------
        dict
            ``{"value": [{host, check, status (pass|fail|skip), detail, fix}, ...],
            "service": {"hpcbatch", "distributed"}, "failed": [host, ...]}``.

        Raises
        ------
        BatchError
            ``PoolNotFound``; ``InvalidPropertyValue``.
        """
        body = {k: v for k, v in (("poolId", pool_id), ("launcher", launcher)) if v}
        return self._request("POST", "/inventory/hosts/check", body=body).json()

    def list_supported_images(self, filter: str | None = None
                              ) -> list[dict[str, Any]]:
        """The images the inventory's hosts offer ("Account - List Supported Images"):
        ``ImageInformation`` wire JSON (``nodeAgentSKUId``, ``imageReference``,
        ``verificationType`` ...), with an optional OData ``$filter``."""
        return list(self._list("/supportedimages", {"$filter": filter}))

    def list_hosts(self) -> list[dict[str, Any]]:
        """Return the inventory: hosts with the pool each belongs to."""
        return self._request("GET", "/inventory/hosts").json()["value"]

    def remove_host(self, name: str) -> None:
        """Remove a host that belongs to no pool from the inventory."""
        self._request("DELETE", f"/inventory/hosts/{self._q(name)}")

    # ------------------------------------------------------ application packages

    def create_application_package(self, application_id: str, version: str,
                                   package_file: str | Path) -> None:
        """Upload a zip as an application package version (the first becomes the default)."""
        data = Path(package_file).read_bytes()
        self._request("PUT", f"/applications/{self._q(application_id)}/versions/"
                      f"{self._q(version)}", raw=data)

    def set_default_application_version(self, application_id: str, version: str | None) -> None:
        """Set (None: clear) an application's default version."""
        self._request("PATCH", f"/applications/{self._q(application_id)}",
                      body={"defaultVersion": version})

    def delete_application_package(self, application_id: str, version: str) -> None:
        """Delete an application package version."""
        self._request("DELETE", f"/applications/{self._q(application_id)}/versions/"
                      f"{self._q(version)}")

    def list_applications(self) -> list[dict[str, Any]]:
        """List applications ("Application - List"): id, displayName, versions, defaultVersion."""
        return list(self._list("/applications"))

    def get_application(self, application_id: str) -> dict[str, Any]:
        """Return one application ("Application - Get")."""
        return self._get(f"/applications/{self._q(application_id)}")

    # ------------------------------------------------------------- certificates

    @staticmethod
    def _certificate(algorithm: str, thumbprint: str) -> str:
        return f"/certificates(thumbprintAlgorithm={algorithm},thumbprint={thumbprint})"

    def add_certificate(self, certificate: Mapping[str, Any]) -> None:
        """Add a certificate ("Certificate - Add"): ``thumbprint``, ``thumbprintAlgorithm``,
        ``data`` (base64), ``certificateFormat`` (``pfx``/``cer``), ``password``."""
        self._request("POST", "/certificates", body=certificate)

    def list_certificates_json(self, filter: str | None = None,
                               select: str | None = None) -> list[Json]:
        """The account's certificates ("Certificate - List"), as wire JSON, optionally
        narrowed by an OData ``$filter`` and ``$select``."""
        return list(self._list("/certificates", {"$filter": filter, "$select": select}))

    def get_certificate_json(self, algorithm: str, thumbprint: str) -> Json:
        """One certificate ("Certificate - Get"), as wire JSON."""
        return self._get(self._certificate(algorithm, thumbprint))

    def delete_certificate(self, algorithm: str, thumbprint: str) -> None:
        """Delete a certificate ("Certificate - Delete"; ``deletefailed`` while pools use it)."""
        self._request("DELETE", self._certificate(algorithm, thumbprint))

    def cancel_certificate_deletion(self, algorithm: str, thumbprint: str) -> None:
        """Make a ``deletefailed`` certificate active again ("Certificate - Cancel Deletion")."""
        self._request("POST", self._certificate(algorithm, thumbprint) + "/canceldelete")
