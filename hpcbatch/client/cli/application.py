"""``hpcbatch application``: application packages, zips that tasks reference by
application and version."""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import (
    Column,
    action_command,
    id_option,
    list_command,
    read_command,
)

APPLICATION_COLUMNS: list[Column] = [
    ("Id", "id"), ("Display name", "displayName"), ("Versions", "versions"),
    ("Default version", "defaultVersion"),
]

application_name_option = id_option("--application-name",
                                    "The application ID (case-insensitive).")


@click.group()
def application() -> None:
    """Manage application packages: zips that tasks reference by application and version.

    A task (or pool) with applicationPackageReferences finds a package extracted in
    $AZ_BATCH_APP_PACKAGE_{app}_{version} (lower case; characters other than letters
    and digits become _), and the default version in $AZ_BATCH_APP_PACKAGE_{app}.
    """


@application.group("package")
def application_package() -> None:
    """Upload and delete application package versions."""


action_command(
    application_package, "create",
    "Upload a zip as a version of an application (created if new).\n\n"
    "The first version of an application becomes its default.",
    lambda c, application_name, version, package_file: c.create_application_package(
        application_name, version, package_file),
    "uploaded {package_file} as {application_name} {version}",
    application_name_option,
    click.option("--version", "version", required=True, help="The package version, e.g. 1.0."),
    click.option("--package-file", type=click.Path(exists=True, dir_okay=False), required=True,
                 help="The zip file to upload."))

action_command(
    application_package, "delete", "Delete a version of an application package.",
    lambda c, application_name, version: c.delete_application_package(application_name,
                                                                      version),
    "deleted package {application_name} {version}",
    application_name_option,
    click.option("--version", "version", required=True, help="The package version."),
    confirm="Delete package {application_name} {version}?")

list_command(application, "list", 'List applications with their versions ("Application - List").',
             lambda c: c.list_applications(), columns=APPLICATION_COLUMNS, server=())

read_command(application, "show", 'Show an application ("Application - Get").',
             lambda c, application_name: c.get_application(application_name),
             application_name_option)

action_command(
    application, "set", "Set an application's default version.",
    lambda c, application_name, default_version: c.set_default_application_version(
        application_name, default_version),
    "{application_name}: default version {default_version}",
    application_name_option,
    click.option("--default-version", required=True,
                 help="Version used by references that name no version."))
