"""Certificates with the official ``azure-batch`` 14.x SDK (15.x has no Certificate operations:
Batch deprecated them).

Run as ``python sdk14_certificates.py certificates`` by tests/compat/test_sdk_nodeops.py with
the interpreter of the 14.x venv (see _harness.py); the certificate (made by the test) comes
in ``COMPAT_CERT`` as JSON ``{"thumbprint", "data", "password"}`` (a pfx, base64).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import azure.batch.models as bm
from _harness import ACCOUNT, ENDPOINT, KEY, PREFIX, VM_SIZE, main, wait_for
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials


def error(call: Any) -> dict[str, Any] | str:
    try:
        call()
    except bm.BatchErrorException as exc:
        return {"status": exc.response.status_code, "code": exc.error.code if exc.error else None}
    return "no error"


def certificates() -> dict[str, Any]:
    cert = json.loads(os.environ["COMPAT_CERT"])
    c = BatchServiceClient(SharedKeyCredentials(ACCOUNT, KEY), batch_url=ENDPOINT)
    tp = cert["thumbprint"]
    out: dict[str, Any] = {}
    out["bad_password"] = error(lambda: c.certificate.add(bm.CertificateAddParameter(
        thumbprint=tp, thumbprint_algorithm="sha1", data=cert["data"],
        certificate_format="pfx", password="wrong")))
    c.certificate.add(bm.CertificateAddParameter(
        thumbprint=tp, thumbprint_algorithm="sha1", data=cert["data"],
        certificate_format="pfx", password=cert["password"]))
    got = c.certificate.get("sha1", tp)
    out["get"] = {"thumbprint": got.thumbprint, "state": str(got.state.value
                                                               if hasattr(got.state, "value")
                                                               else got.state)}
    out["listed"] = [x.thumbprint for x in c.certificate.list()]
    pool_id = f"{PREFIX}-certpool"
    c.pool.add(bm.PoolAddParameter(
        id=pool_id, vm_size=VM_SIZE, target_dedicated_nodes=1,
        certificate_references=[bm.CertificateReference(
            thumbprint=tp, thumbprint_algorithm="sha1", visibility=["task"])]))
    node = wait_for(lambda: [n for n in c.compute_node.list(pool_id) if n.state == "idle"], 180,
                    "an idle node")[0]
    job_id = f"{PREFIX}-certjob"
    c.job.add(bm.JobAddParameter(id=job_id, pool_info=bm.PoolInformation(pool_id=pool_id)))
    c.task.add(job_id, bm.TaskAddParameter(
        id="t", command_line="/bin/sh -c 'ls $AZ_BATCH_CERTIFICATES_DIR'"))
    wait_for(lambda: c.task.get(job_id, "t").state == bm.TaskState.completed, 120, "task t")
    out["task_sees"] = b"".join(c.file.get_from_task(job_id, "t", "stdout.txt")).decode().split()
    c.certificate.delete("sha1", tp)
    state = c.certificate.get("sha1", tp)
    out["after_delete"] = {"state": str(getattr(state.state, "value", state.state)),
                           "error": state.delete_certificate_error.code
                           if state.delete_certificate_error else None}
    c.certificate.cancel_deletion("sha1", tp)
    out["after_cancel"] = str(getattr(c.certificate.get("sha1", tp).state, "value", ""))
    time.sleep(1.1)  # the same request again: a new date, else the service sees a replay
    out["cancel_active"] = error(lambda: c.certificate.cancel_deletion("sha1", tp))
    # update_properties (14.x always sends certificateReferences): an empty list drops it
    c.pool.update_properties(pool_id, bm.PoolUpdatePropertiesParameter(
        certificate_references=[], application_package_references=[], metadata=[]))
    time.sleep(1.1)
    c.certificate.delete("sha1", tp)
    out["gone"] = error(lambda: c.certificate.get("sha1", tp))
    out["node"] = node.id
    c.job.delete(job_id)
    c.pool.delete(pool_id)
    return out


if __name__ == "__main__":
    main({"certificates": certificates})
