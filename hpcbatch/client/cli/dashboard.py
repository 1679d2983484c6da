"""``hpcbatch dashboard``: a one-time sign-in link to the service's web dashboard.

The service mints the link's token for a SharedKey-signed request
(:meth:`hpcbatch.BatchClient.dashboard_sign_in_url`), so the command works
wherever the CLI finds the account key (the state dir, or
``AZURE_BATCH_ENDPOINT``/``_ACCOUNT``/``_ACCESS_KEY``). The link works once,
within 5 minutes; the browser then keeps a session cookie.
"""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import as_json, client, note, output_option


@click.command()
@click.option("--open", "open_browser", is_flag=True,
              help="Also open the link in this machine's web browser.")
@output_option
def dashboard(open_browser: bool) -> None:
    """Print a one-time sign-in URL for the web dashboard (like Jupyter's token link)."""
    url = client().dashboard_sign_in_url()
    if as_json():
        import json

        click.echo(json.dumps({"url": url}))
    else:
        click.echo(url)
        note("This link signs a browser in once, within 5 minutes. The dashboard's sign-in "
             "page also accepts the account key.")
    if open_browser:
        import webbrowser

        if not webbrowser.open(url):
            note("could not open a browser; open the link above yourself")
