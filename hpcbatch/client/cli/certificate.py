"""``hpcbatch certificate``: the account's certificates ("Certificate - Add/List/Get/Delete/
Cancel Deletion"; deprecated by Batch, kept for the scripts that use them)."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from hpcbatch.client.cli.common import (
    Column,
    action_command,
    client,
    list_command,
    note,
    read_command,
)

CERTIFICATE_COLUMNS: list[Column] = [
    ("Thumbprint", "thumbprint"), ("Algorithm", "thumbprintAlgorithm"), ("State", "state"),
    ("Delete error", "deleteCertificateError.code"),
]

_thumbprint = click.option("--thumbprint", required=True, help="The certificate's thumbprint.")
_algorithm = click.option("--thumbprint-algorithm", default="sha1", show_default=True,
                          help="The thumbprint's algorithm.")


@click.group()
def certificate() -> None:
    """Manage the account's certificates (installed on the nodes of pools that reference them)."""


@certificate.command("create")
@click.option("--certificate-file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A .cer (DER or PEM) or .pfx file.")
@_thumbprint
@_algorithm
@click.option("--password", help="The pfx file's password (a .cer has none).")
def certificate_create(certificate_file: Path, thumbprint: str, thumbprint_algorithm: str,
                       password: str | None) -> None:
    """Add a certificate from a file ("Certificate - Add"); the format follows the file's
    extension (.cer or .pfx)."""
    fmt = "cer" if certificate_file.suffix.lower() in (".cer", ".crt", ".pem") else "pfx"
    body = {"thumbprint": thumbprint, "thumbprintAlgorithm": thumbprint_algorithm,
            "certificateFormat": fmt,
            "data": base64.b64encode(certificate_file.read_bytes()).decode()}
    if password is not None:
        body["password"] = password
    client().add_certificate(body)
    note(f"added certificate {thumbprint_algorithm}-{thumbprint}")


list_command(certificate, "list", 'List the account\'s certificates ("Certificate - List").',
             lambda c, filter_, select: c.list_certificates_json(filter_, select),
             columns=CERTIFICATE_COLUMNS, example="state eq 'active'")

read_command(certificate, "show", "Show a certificate.",
             lambda c, thumbprint, thumbprint_algorithm: c.get_certificate_json(
                 thumbprint_algorithm, thumbprint), _thumbprint, _algorithm)

action_command(
    certificate, "delete",
    "Delete a certificate (it stays, deletefailed, while pools reference it).",
    lambda c, thumbprint, thumbprint_algorithm: c.delete_certificate(thumbprint_algorithm,
                                                                     thumbprint),
    "deleting certificate {thumbprint_algorithm}-{thumbprint}", _thumbprint, _algorithm)

action_command(
    certificate, "cancel-delete",
    'Make a deletefailed certificate active again ("Certificate - Cancel Deletion").',
    lambda c, thumbprint, thumbprint_algorithm: c.cancel_certificate_deletion(
        thumbprint_algorithm, thumbprint),
    "certificate {thumbprint_algorithm}-{thumbprint} is active again", _thumbprint, _algorithm)
