"""Run with the official azure-batch 15.x SDK (in its venv) against an hpcbatch service over HTTPS.

Standard library and the SDK only. Environment: ``AZ_BATCH_ENDPOINT`` (an
``https://`` URL), ``AZ_BATCH_ACCOUNT``, ``AZ_BATCH_KEY``, ``REQUESTS_CA_BUNDLE``
(the service's CA: the SDK's transport trusts it through ``requests``),
``JOB_ID`` (a job to create, unless ``JOB_EXISTS`` is set: a token is bound to
its job's incarnation, so the caller creates the job before minting one) and
``JOB_TOKEN`` (a token scoped to that job, as a task with
``authenticationTokenSettings`` gets in ``AZ_BATCH_AUTHENTICATION_TOKEN``). Prints one line ``COMPAT-RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import time

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

ENDPOINT = os.environ["AZ_BATCH_ENDPOINT"]
JOB_ID = os.environ["JOB_ID"]


class JobToken:
    """A ``TokenCredential`` handing out the job-scoped token (sent as ``Authorization: Bearer``)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(os.environ["JOB_TOKEN"], int(time.time()) + 3600)


def code_of(call) -> str:  # type: ignore[no-untyped-def]
    try:
        call()
    except HttpResponseError as exc:
        return f"{exc.status_code} {exc.error.code if exc.error else exc.reason}"
    return "ok"


def main() -> None:
    out: dict[str, object] = {}
    keyed = BatchClient(ENDPOINT, AzureNamedKeyCredential(os.environ["AZ_BATCH_ACCOUNT"],
                                                          os.environ["AZ_BATCH_KEY"]))
    if not os.environ.get("JOB_EXISTS"):
        keyed.create_job(m.BatchJobCreateOptions(id=JOB_ID,
                                                 pool_info=m.BatchPoolInfo(pool_id="nopool")))
    out["job_state"] = str(keyed.get_job(JOB_ID).state.value)
    out["pools_with_key"] = [p.id for p in keyed.list_pools()]
    tokened = BatchClient(ENDPOINT, JobToken())
    tokened.create_task(JOB_ID, m.BatchTaskCreateOptions(id="from-token", command_line="/bin/true"))
    out["tasks_with_token"] = [t.id for t in tokened.list_tasks(JOB_ID)]
    out["list_pools_with_token"] = code_of(lambda: list(tokened.list_pools()))
    out["other_job_with_token"] = code_of(lambda: tokened.get_job(JOB_ID + "-other"))
    out["create_job_with_token"] = code_of(lambda: tokened.create_job(m.BatchJobCreateOptions(
        id=JOB_ID + "-new", pool_info=m.BatchPoolInfo(pool_id="nopool"))))
    print("COMPAT-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
