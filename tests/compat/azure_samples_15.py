"""A Batch script in the style of Microsoft's published Python samples, ported to azure-batch
15.x (track 2: ``azure.batch.BatchClient``, ``azure.batch.models``) with azure-storage-blob
12.x (``BlobServiceClient``): the same flow as ``azure_samples_11.py``.

As the samples (azure-batch-samples ``Python/Batch``, ``common/helpers.py``) do:
pick the latest verified Ubuntu or Debian image with "Account - List Supported
Images" (``list_supported_images``); upload the input files and a coordination
script to a blob container; create a pool with a start task; create a job and
one task per input, each with its input as a resource file from a blob SAS URL
and its output uploaded to an output container's SAS URL; run a multi-instance
MPI task whose coordination script comes from ``commonResourceFiles`` without
``fileMode`` (run directly, so it must land executable: Batch's 0770); wait;
download the outputs from the container; delete the job, the pool and the
containers.

The only lines that differ from running it against Azure are the account
settings, read from the environment (the storage account is Azurite, given by
a connection string). ``python azure_samples_15.py sample`` runs the above;
``auto_pool`` runs a job on an auto pool (``autoPoolSpecification``). What
the script saw is printed as ``COMPAT-RESULT {json}`` (``_harness.py``).
"""

import datetime
import os
import pathlib
import sys
import time

from _harness import MPIEXEC, PREFIX, PYTHON, VM_SIZE, enum, main
from azure.batch import BatchClient
from azure.batch import models as batchmodels
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

# --- accounts (the only lines changed for hpcbatch: read from the environment)
BATCH_ACCOUNT_NAME = os.environ.get("AZ_BATCH_ACCOUNT", "")
BATCH_ACCOUNT_KEY = os.environ.get("AZ_BATCH_KEY", "")
BATCH_ACCOUNT_URL = os.environ.get("AZ_BATCH_ENDPOINT", "")
STORAGE_CONNECTION_STRING = os.environ.get("COMPAT_STORAGE_CONNECTION_STRING", "")
# ---

POOL_ID = f"{PREFIX}-SamplePool"
JOB_ID = f"{PREFIX}-SampleJob"
POOL_NODE_COUNT = 2
POOL_VM_SIZE = VM_SIZE
POLL_S = 1  # LRO polling interval for the deletes (the SDK's default is 5 s)
INPUT_CONTAINER = f"{PREFIX.lower()}-input"
OUTPUT_CONTAINER = f"{PREFIX.lower()}-output"
INPUTS = {"taskdata0.txt": "the quick brown fox\n", "taskdata1.txt": "jumps over the lazy dog\n",
          "taskdata2.txt": "hello batch\n"}
COORDINATION_SCRIPT = "#!/bin/sh\necho coordinated $AZ_BATCH_NODE_ID | " \
                      "tee $AZ_BATCH_TASK_SHARED_DIR/coordinated\n"


def print_batch_exception(batch_exception):
    """Prints the contents of the specified Batch error (15.x: an HttpResponseError whose
    ``error`` is the OData error: code, message, details)."""
    print("-------------------------------------------")
    print("Exception encountered:")
    error = batch_exception.error
    print(error.message if error and error.message else batch_exception.message)
    for detail in (error.details or []) if error else []:
        print(f"{detail.code}:\t{detail.message}")
    print("-------------------------------------------")


def select_latest_verified_vm_image_with_node_agent_sku(batch_client, publishers, offer_words):
    """Select the latest verified image that Azure Batch supports given a publisher and offer
    (common/helpers.py of the samples; here any of Canonical's Ubuntu or Debian's images).

    :return: (node agent sku id to use, vm image ref to use)
    """
    # get verified vm image list and node agent sku ids from service
    images = batch_client.list_supported_images(filter="verificationType eq 'verified'")
    # pick the latest supported sku
    skus_to_use = [
        (image.node_agent_sku_id, image.image_reference) for image in images
        if image.image_reference.publisher.lower() in publishers
        and any(w in image.image_reference.offer.lower() for w in offer_words)
        and image.os_type == batchmodels.OSType.LINUX
    ]
    skus_to_use.sort(key=lambda s: s[1].sku, reverse=True)
    # pick first
    agent_sku_id, image_ref_to_use = skus_to_use[0]
    return (agent_sku_id, image_ref_to_use)


def upload_file_to_container(blob_storage_service_client, container_name, file_name, text):
    """Uploads a file to an Azure Blob storage container; returns a ResourceFile with a read
    SAS URL (python_quickstart_client.py of the samples, azure-storage-blob 12)."""
    print(f"Uploading file {file_name} to container [{container_name}]...")
    blob_client = blob_storage_service_client.get_blob_client(container_name, file_name)
    blob_client.upload_blob(text.encode(), overwrite=True)
    credential = blob_storage_service_client.credential
    sas_token = generate_blob_sas(
        credential.account_name, container_name, file_name,
        account_key=credential.account_key, permission=BlobSasPermissions(read=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2))
    # the samples write https://{account}.{domain}/{container}/{blob}?{sas}: the blob's URL,
    # on Azure and on Azurite alike
    sas_url = f"{blob_client.url}?{sas_token}"
    return batchmodels.ResourceFile(http_url=sas_url, file_path=file_name)


def get_container_sas_url(blob_storage_service_client, container_name, permission):
    """Obtains a shared access signature URL that provides write access to the output
    container to which the tasks will upload their output."""
    credential = blob_storage_service_client.credential
    sas_token = generate_container_sas(
        credential.account_name, container_name, account_key=credential.account_key,
        permission=permission,
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2))
    container_url = blob_storage_service_client.get_container_client(container_name).url
    return f"{container_url}?{sas_token}"


def start_task():
    """The start task of the pools: marks the node ready in its shared folder."""
    return batchmodels.BatchStartTask(
        command_line="/bin/bash -c \"echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready.txt\"",
        wait_for_success=True,
        user_identity=batchmodels.UserIdentity(
            auto_user=batchmodels.AutoUserSpecification(
                scope=batchmodels.AutoUserScope.POOL,
                elevation_level=batchmodels.ElevationLevel.NON_ADMIN)))


def create_pool(batch_service_client, pool_id, node_agent_sku, image_reference):
    """Creates a pool of compute nodes with a start task that must succeed on each node."""
    print(f"Creating pool [{pool_id}]...")
    new_pool = batchmodels.BatchPoolCreateOptions(
        id=pool_id,
        virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
            image_reference=image_reference, node_agent_sku_id=node_agent_sku),
        vm_size=POOL_VM_SIZE,
        target_dedicated_nodes=POOL_NODE_COUNT,
        enable_inter_node_communication=True,
        start_task=start_task())
    batch_service_client.create_pool(new_pool)


def create_job(batch_service_client, job_id, pool_id):
    """Creates a job with the specified ID, associated with the specified pool."""
    print(f"Creating job [{job_id}]...")
    job = batchmodels.BatchJobCreateOptions(
        id=job_id, pool_info=batchmodels.BatchPoolInfo(pool_id=pool_id))
    batch_service_client.create_job(job)


def output_file(file_pattern, container_sas_url, condition):
    """An output file uploaded to the container's SAS URL under its own name."""
    return batchmodels.OutputFile(
        file_pattern=file_pattern,
        destination=batchmodels.OutputFileDestination(
            container=batchmodels.OutputFileBlobContainerDestination(
                container_url=container_sas_url, path=file_pattern)),
        upload_options=batchmodels.OutputFileUploadConfiguration(upload_condition=condition))


def add_tasks(batch_service_client, job_id, input_files, output_container_sas_url):
    """Adds a task for each input file; each uploads its output to the output container."""
    print(f"Adding {len(input_files)} tasks to job [{job_id}]...")
    tasks = []
    for idx, input_file in enumerate(input_files):
        output_name = f"{input_file.file_path}.wc"
        command = f"/bin/bash -c \"cat $AZ_BATCH_NODE_SHARED_DIR/ready.txt > {output_name} && " \
                  f"wc -w < {input_file.file_path} >> {output_name}\""
        tasks.append(batchmodels.BatchTaskCreateOptions(
            id=f"Task{idx}", command_line=command, resource_files=[input_file],
            output_files=[output_file(output_name, output_container_sas_url,
                                      batchmodels.OutputFileUploadCondition.TASK_SUCCESS)]))
    batch_service_client.create_tasks(job_id, tasks)


def add_mpi_task(batch_service_client, job_id, coordination_file, output_container_sas_url):
    """Adds a multi-instance MPI task; its coordination script comes from
    commonResourceFiles (no fileMode) and is run directly."""
    print(f"Adding the MPI task to job [{job_id}]...")
    command = (f"/bin/sh -c '{MPIEXEC} -hosts $AZ_BATCH_HOST_LIST -n {POOL_NODE_COUNT} {PYTHON} -m "
               "hpcbatch.mpihello > mpi.out && cat $AZ_BATCH_TASK_SHARED_DIR/coordinated "
               ">> mpi.out'")
    task = batchmodels.BatchTaskCreateOptions(
        id="MpiTask", command_line=command,
        multi_instance_settings=batchmodels.MultiInstanceSettings(
            number_of_instances=POOL_NODE_COUNT,
            coordination_command_line="/bin/bash -c $AZ_BATCH_TASK_SHARED_DIR/coordination.sh",
            common_resource_files=[coordination_file]),
        output_files=[output_file("mpi.out", output_container_sas_url,
                                  batchmodels.OutputFileUploadCondition.TASK_COMPLETION)])
    batch_service_client.create_task(job_id, task)


def wait_for_tasks_to_complete(batch_service_client, job_id, timeout):
    """Returns when all tasks in the specified job reach the Completed state."""
    timeout_expiration = datetime.datetime.now() + timeout
    print(f"Monitoring all tasks for 'Completed' state, timeout in {timeout}...", end="")
    while datetime.datetime.now() < timeout_expiration:
        print(".", end="")
        sys.stdout.flush()
        tasks = batch_service_client.list_tasks(job_id)
        incomplete_tasks = [task for task in tasks if
                            task.state != batchmodels.BatchTaskState.COMPLETED]
        if not incomplete_tasks:
            print()
            return list(batch_service_client.list_tasks(job_id))
        time.sleep(1)
    print()
    raise RuntimeError("ERROR: Tasks did not reach 'Completed' state within "
                       "timeout period of " + str(timeout))


def download_blobs_from_container(blob_storage_service_client, container_name, directory_path):
    """Downloads all blobs from the specified Azure Blob storage container."""
    print(f"Downloading all files from container [{container_name}]...")
    container_client = blob_storage_service_client.get_container_client(container_name)
    for blob in container_client.list_blobs():
        destination_file_path = os.path.join(directory_path, blob.name)
        with open(destination_file_path, "wb") as f:
            f.write(container_client.download_blob(blob.name).readall())
        print(f"  Downloaded blob [{blob.name}] from container [{container_name}] to {destination_file_path}")
    print("  Download complete!")


def _read_task_file(batch_client, job_id, task_id, name):
    return b"".join(batch_client.download_task_file(job_id, task_id, name)).decode("utf-8")


def clients():
    batch_client = BatchClient(BATCH_ACCOUNT_URL,
                               AzureNamedKeyCredential(BATCH_ACCOUNT_NAME, BATCH_ACCOUNT_KEY))
    blob_client = BlobServiceClient.from_connection_string(STORAGE_CONNECTION_STRING)
    return batch_client, blob_client


def sample():
    """The sample: image, inputs, pool with start task, job, tasks, MPI task, outputs, cleanup."""
    import tempfile

    batch_client, blob_client = clients()
    out = {}
    for container in (INPUT_CONTAINER, OUTPUT_CONTAINER):
        if not blob_client.get_container_client(container).exists():
            blob_client.create_container(container)
    input_files = [upload_file_to_container(blob_client, INPUT_CONTAINER, name, text)
                   for name, text in INPUTS.items()]
    coordination = upload_file_to_container(blob_client, INPUT_CONTAINER, "coordination.sh",
                                            COORDINATION_SCRIPT)
    output_sas_url = get_container_sas_url(
        blob_client, OUTPUT_CONTAINER,
        ContainerSasPermissions(write=True, list=True))
    try:
        sku, image = select_latest_verified_vm_image_with_node_agent_sku(
            batch_client, ("canonical", "debian"), ("ubuntu", "debian"))
        out["image"] = {"node_agent_sku_id": sku, "publisher": image.publisher,
                        "offer": image.offer, "sku": image.sku}
        create_pool(batch_client, POOL_ID, sku, image)
        create_job(batch_client, JOB_ID, POOL_ID)
        add_tasks(batch_client, JOB_ID, input_files, output_sas_url)
        add_mpi_task(batch_client, JOB_ID, coordination, output_sas_url)
        tasks = wait_for_tasks_to_complete(batch_client, JOB_ID, datetime.timedelta(minutes=10))
        out["tasks"] = {t.id: {"state": enum(t.state), "exit_code": t.execution_info.exit_code,
                               "result": enum(t.execution_info.result),
                               "failure": (t.execution_info.failure_info.message
                                           if t.execution_info.failure_info else None)}
                        for t in tasks}
        out["nodes"] = {n.id: {"state": enum(n.state),
                               "start_task": enum(n.start_task_info.state),
                               "start_task_exit_code": n.start_task_info.exit_code}
                        for n in batch_client.list_nodes(POOL_ID)}
        out["subtasks"] = [{"id": s.id, "state": enum(s.state), "exit_code": s.exit_code}
                           for s in batch_client.list_subtasks(JOB_ID, "MpiTask")]
        out["mpi_stdout"] = _read_task_file(batch_client, JOB_ID, "MpiTask", "stdout.txt")
        directory = tempfile.mkdtemp()
        download_blobs_from_container(blob_client, OUTPUT_CONTAINER, directory)
        out["outputs"] = {name: pathlib.Path(directory, name).read_text()
                          for name in sorted(os.listdir(directory))}
    except HttpResponseError as err:
        print_batch_exception(err)
        raise
    finally:
        print("Deleting containers, job and pool...")
        blob_client.delete_container(INPUT_CONTAINER)
        blob_client.delete_container(OUTPUT_CONTAINER)
        for delete in (lambda: batch_client.begin_delete_job(
                           JOB_ID, polling_interval=POLL_S).result(),
                       lambda: batch_client.begin_delete_pool(
                           POOL_ID, polling_interval=POLL_S).result()):
            try:
                delete()
            except HttpResponseError as err:
                print_batch_exception(err)
    out["containers_after"] = sorted(c.name for c in blob_client.list_containers())
    return out


def auto_pool():
    """A job on an auto pool: the pool lives as long as the job (poolLifetimeOption job)."""
    batch_client, _ = clients()
    job_id = f"{PREFIX}-AutoPoolJob"
    sku, image = select_latest_verified_vm_image_with_node_agent_sku(
        batch_client, ("canonical", "debian"), ("ubuntu", "debian"))
    print(f"Creating job [{job_id}] on an auto pool...")
    batch_client.create_job(batchmodels.BatchJobCreateOptions(
        id=job_id,
        pool_info=batchmodels.BatchPoolInfo(
            auto_pool_specification=batchmodels.BatchAutoPoolSpecification(
                auto_pool_id_prefix=f"{PREFIX}-auto",
                pool_lifetime_option=batchmodels.BatchPoolLifetimeOption.JOB,
                keep_alive=False,
                pool=batchmodels.BatchPoolSpecification(
                    vm_size=POOL_VM_SIZE, target_dedicated_nodes=1,
                    virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
                        image_reference=image, node_agent_sku_id=sku),
                    start_task=batchmodels.BatchStartTask(
                        command_line="/bin/bash -c \"echo ready > "
                                     "$AZ_BATCH_NODE_SHARED_DIR/ready.txt\"",
                        wait_for_success=True))))))
    try:
        batch_client.create_task(job_id, batchmodels.BatchTaskCreateOptions(
            id="AutoTask",
            command_line="/bin/bash -c \"cat $AZ_BATCH_NODE_SHARED_DIR/ready.txt\""))
        [task] = wait_for_tasks_to_complete(batch_client, job_id, datetime.timedelta(minutes=10))
        pool_id = batch_client.get_job(job_id).execution_info.pool_id
        stdout = _read_task_file(batch_client, job_id, "AutoTask", "stdout.txt")
        # As Batch documents: a job with no tasks has all its tasks complete, so
        # terminatejob is set once the tasks are in; here they are done, so the job
        # ends now, and its auto pool (poolLifetimeOption job) with it. 15.x's
        # update_job is the PATCH (replace_job the PUT).
        batch_client.update_job(job_id, batchmodels.BatchJobUpdateOptions(
            all_tasks_complete_mode=batchmodels.BatchAllTasksCompleteMode.TERMINATE_JOB))
        job_state = enum(batch_client.get_job(job_id).state)
        return {"task": {"state": enum(task.state), "exit_code": task.execution_info.exit_code},
                "stdout": stdout, "pool_id": pool_id, "job_state": job_state}
    finally:
        batch_client.begin_delete_job(job_id, polling_interval=POLL_S).result()


if __name__ == "__main__":
    main({"sample": sample, "auto_pool": auto_pool})
