"""A Batch script in the style of Microsoft's published Python samples, azure-batch 8.x with the
legacy azure-storage-blob 1.x (``BlockBlobService``), as written for Azure around 2019.

As the samples (azure-batch-samples ``Python/Batch``, ``common/helpers.py``) do:
pick the latest verified Ubuntu or Debian image with "Account - List Supported
Images"; upload the input files and a coordination script to a blob container;
create a pool with a start task; create a job and one task per input, each
with its input as a resource file from a blob SAS URL and its output uploaded
to an output container's SAS URL; run a multi-instance MPI task whose
coordination script comes from ``commonResourceFiles`` without ``fileMode``
(run directly, so it must land executable: Batch's 0770); wait; download the
outputs from the container; delete the job, the pool and the containers.

The only lines that differ from running it against Azure are the account
settings, read from the environment (the storage account is Azurite, given by
a connection string). ``python azure_samples_8.py sample`` runs the above;
``auto_pool`` runs a job on an auto pool (``autoPoolSpecification``). What
the script saw is printed as ``COMPAT-RESULT {json}`` (``_harness.py``).
"""

import datetime
import io
import os
import pathlib
import sys
import time

import azure.batch.models as batchmodels
import azure.storage.blob as azureblob
from _harness import MPIEXEC, PREFIX, PYTHON, VM_SIZE, main
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

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
INPUT_CONTAINER = f"{PREFIX.lower()}-input"
OUTPUT_CONTAINER = f"{PREFIX.lower()}-output"
INPUTS = {"taskdata0.txt": "the quick brown fox\n", "taskdata1.txt": "jumps over the lazy dog\n",
          "taskdata2.txt": "hello batch\n"}
COORDINATION_SCRIPT = "#!/bin/sh\necho coordinated $AZ_BATCH_NODE_ID | " \
                      "tee $AZ_BATCH_TASK_SHARED_DIR/coordinated\n"


def print_batch_exception(batch_exception):
    """Prints the contents of the specified Batch exception (as the samples' helpers do)."""
    print("-------------------------------------------")
    print("Exception encountered:")
    if batch_exception.error and batch_exception.error.message and \
            batch_exception.error.message.value:
        print(batch_exception.error.message.value)
        if batch_exception.error.values:
            print()
            for mesg in batch_exception.error.values:
                print(f"{mesg.key}:\t{mesg.value}")
    print("-------------------------------------------")


def select_latest_verified_vm_image_with_node_agent_sku(batch_client, publishers, offer_words):
    """Select the latest verified image that Azure Batch supports given a publisher and offer
    (common/helpers.py of the samples; here any of Canonical's Ubuntu or Debian's images).

    :return: (node agent sku id to use, vm image ref to use)
    """
    # get verified vm image list and node agent sku ids from service
    options = batchmodels.AccountListSupportedImagesOptions(
        filter="verificationType eq 'verified'")
    images = batch_client.account.list_supported_images(
        account_list_supported_images_options=options)
    # pick the latest supported sku
    skus_to_use = [
        (image.node_agent_sku_id, image.image_reference) for image in images
        if image.image_reference.publisher.lower() in publishers
        and any(w in image.image_reference.offer.lower() for w in offer_words)
        and image.os_type == batchmodels.OSType.linux
    ]
    skus_to_use.sort(key=lambda s: s[1].sku, reverse=True)
    # pick first
    agent_sku_id, image_ref_to_use = skus_to_use[0]
    return (agent_sku_id, image_ref_to_use)


def upload_file_to_container(block_blob_client, container_name, file_name, text):
    """Uploads a file to a blob container; returns a ResourceFile with a read SAS URL."""
    print(f"Uploading file {file_name} to container [{container_name}]...")
    block_blob_client.create_blob_from_text(container_name, file_name, text)
    sas_token = block_blob_client.generate_blob_shared_access_signature(
        container_name, file_name, permission=azureblob.BlobPermissions.READ,
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2))
    sas_url = block_blob_client.make_blob_url(container_name, file_name, sas_token=sas_token)
    return batchmodels.ResourceFile(http_url=sas_url, file_path=file_name)


def get_container_sas_url(block_blob_client, container_name, permission):
    """Obtains a shared access signature URL that provides write access to the output
    container to which the tasks will upload their output."""
    sas_token = block_blob_client.generate_container_shared_access_signature(
        container_name, permission=permission,
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2))
    # the samples write https://{account}.blob.core.windows.net/{container}?{sas}; the
    # client's endpoint is the same URL on Azure and also right on Azurite
    return f"{block_blob_client.protocol}://{block_blob_client.primary_endpoint}/{container_name}?{sas_token}"


def create_pool(batch_service_client, pool_id, node_agent_sku, image_reference):
    """Creates a pool of compute nodes with a start task that must succeed on each node."""
    print(f"Creating pool [{pool_id}]...")
    new_pool = batchmodels.PoolAddParameter(
        id=pool_id,
        virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
            image_reference=image_reference, node_agent_sku_id=node_agent_sku),
        vm_size=POOL_VM_SIZE,
        target_dedicated_nodes=POOL_NODE_COUNT,
        enable_inter_node_communication=True,
        start_task=batchmodels.StartTask(
            command_line="/bin/bash -c \"echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready.txt\"",
            wait_for_success=True,
            user_identity=batchmodels.UserIdentity(
                auto_user=batchmodels.AutoUserSpecification(
                    scope=batchmodels.AutoUserScope.pool,
                    elevation_level=batchmodels.ElevationLevel.non_admin))))
    batch_service_client.pool.add(new_pool)


def create_job(batch_service_client, job_id, pool_id):
    """Creates a job with the specified ID, associated with the specified pool."""
    print(f"Creating job [{job_id}]...")
    job = batchmodels.JobAddParameter(
        id=job_id, pool_info=batchmodels.PoolInformation(pool_id=pool_id))
    batch_service_client.job.add(job)


def add_tasks(batch_service_client, job_id, input_files, output_container_sas_url):
    """Adds a task for each input file; each uploads its output to the output container."""
    print(f"Adding {len(input_files)} tasks to job [{job_id}]...")
    tasks = []
    for idx, input_file in enumerate(input_files):
        output_file = f"{input_file.file_path}.wc"
        command = f"/bin/bash -c \"cat $AZ_BATCH_NODE_SHARED_DIR/ready.txt > {output_file} && " \
                  f"wc -w < {input_file.file_path} >> {output_file}\""
        tasks.append(batchmodels.TaskAddParameter(
            id=f"Task{idx}", command_line=command, resource_files=[input_file],
            output_files=[batchmodels.OutputFile(
                file_pattern=output_file,
                destination=batchmodels.OutputFileDestination(
                    container=batchmodels.OutputFileBlobContainerDestination(
                        container_url=output_container_sas_url, path=output_file)),
                upload_options=batchmodels.OutputFileUploadOptions(
                    upload_condition=batchmodels.OutputFileUploadCondition.task_success))]))
    batch_service_client.task.add_collection(job_id, tasks)


def add_mpi_task(batch_service_client, job_id, coordination_file, output_container_sas_url):
    """Adds a multi-instance MPI task; its coordination script comes from
    commonResourceFiles (no fileMode) and is run directly."""
    print(f"Adding the MPI task to job [{job_id}]...")
    command = (f"/bin/sh -c '{MPIEXEC} -hosts $AZ_BATCH_HOST_LIST -n {POOL_NODE_COUNT} {PYTHON} -m "
               "hpcbatch.mpihello > mpi.out && cat $AZ_BATCH_TASK_SHARED_DIR/coordinated "
               ">> mpi.out'")
    task = batchmodels.TaskAddParameter(
        id="MpiTask", command_line=command,
        multi_instance_settings=batchmodels.MultiInstanceSettings(
            number_of_instances=POOL_NODE_COUNT,
            coordination_command_line="/bin/bash -c $AZ_BATCH_TASK_SHARED_DIR/coordination.sh",
            common_resource_files=[coordination_file]),
        output_files=[batchmodels.OutputFile(
            file_pattern="mpi.out",
            destination=batchmodels.OutputFileDestination(
                container=batchmodels.OutputFileBlobContainerDestination(
                    container_url=output_container_sas_url, path="mpi.out")),
            upload_options=batchmodels.OutputFileUploadOptions(
                upload_condition=batchmodels.OutputFileUploadCondition.task_completion))])
    batch_service_client.task.add(job_id, task)


def wait_for_tasks_to_complete(batch_service_client, job_id, timeout):
    """Returns when all tasks in the specified job reach the Completed state."""
    timeout_expiration = datetime.datetime.now() + timeout
    print(f"Monitoring all tasks for 'Completed' state, timeout in {timeout}...", end="")
    while datetime.datetime.now() < timeout_expiration:
        print(".", end="")
        sys.stdout.flush()
        tasks = batch_service_client.task.list(job_id)
        incomplete_tasks = [task for task in tasks if
                            task.state != batchmodels.TaskState.completed]
        if not incomplete_tasks:
            print()
            return list(batch_service_client.task.list(job_id))
        time.sleep(1)
    print()
    raise RuntimeError("ERROR: Tasks did not reach 'Completed' state within "
                       "timeout period of " + str(timeout))


def download_blobs_from_container(block_blob_client, container_name, directory_path):
    """Downloads all blobs from the specified Azure Blob storage container."""
    print(f"Downloading all files from container [{container_name}]...")
    container_blobs = block_blob_client.list_blobs(container_name)
    for blob in container_blobs:
        destination_file_path = os.path.join(directory_path, blob.name)
        block_blob_client.get_blob_to_path(container_name, blob.name, destination_file_path)
        print(f"  Downloaded blob [{blob.name}] from container [{container_name}] to {destination_file_path}")
    print("  Download complete!")


def _read_stream_as_string(stream, encoding="utf-8"):
    output = io.BytesIO()
    for data in stream:
        output.write(data)
    return output.getvalue().decode(encoding)


def clients():
    credentials = SharedKeyCredentials(BATCH_ACCOUNT_NAME, BATCH_ACCOUNT_KEY)
    batch_client = BatchServiceClient(credentials, batch_url=BATCH_ACCOUNT_URL)
    blob_client = azureblob.BlockBlobService(connection_string=STORAGE_CONNECTION_STRING)
    return batch_client, blob_client


def sample():
    """The sample: image, inputs, pool with start task, job, tasks, MPI task, outputs, cleanup."""
    import tempfile

    batch_client, blob_client = clients()
    out = {}
    blob_client.create_container(INPUT_CONTAINER, fail_on_exist=False)
    blob_client.create_container(OUTPUT_CONTAINER, fail_on_exist=False)
    input_files = [upload_file_to_container(blob_client, INPUT_CONTAINER, name, text)
                   for name, text in INPUTS.items()]
    coordination = upload_file_to_container(blob_client, INPUT_CONTAINER, "coordination.sh",
                                            COORDINATION_SCRIPT)
    output_sas_url = get_container_sas_url(
        blob_client, OUTPUT_CONTAINER,
        azureblob.ContainerPermissions.WRITE | azureblob.ContainerPermissions.LIST)
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
        out["tasks"] = {t.id: {"state": t.state.value, "exit_code": t.execution_info.exit_code,
                               "result": getattr(t.execution_info.result, "value", None),
                               "failure": (t.execution_info.failure_info.message
                                           if t.execution_info.failure_info else None)}
                        for t in tasks}
        out["nodes"] = {n.id: {"state": n.state.value,
                               "start_task": n.start_task_info.state.value,
                               "start_task_exit_code": n.start_task_info.exit_code}
                        for n in batch_client.compute_node.list(POOL_ID)}
        out["subtasks"] = [{"id": s.id, "state": s.state.value, "exit_code": s.exit_code}
                           for s in batch_client.task.list_subtasks(JOB_ID, "MpiTask").value]
        out["mpi_stdout"] = _read_stream_as_string(
            batch_client.file.get_from_task(JOB_ID, "MpiTask", "stdout.txt"))
        directory = tempfile.mkdtemp()
        download_blobs_from_container(blob_client, OUTPUT_CONTAINER, directory)
        out["outputs"] = {name: pathlib.Path(directory, name).read_text()
                          for name in sorted(os.listdir(directory))}
    except batchmodels.BatchErrorException as err:
        print_batch_exception(err)
        raise
    finally:
        print("Deleting containers, job and pool...")
        blob_client.delete_container(INPUT_CONTAINER)
        blob_client.delete_container(OUTPUT_CONTAINER)
        for delete in (lambda: batch_client.job.delete(JOB_ID),
                       lambda: batch_client.pool.delete(POOL_ID)):
            try:
                delete()
            except batchmodels.BatchErrorException as err:
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
    batch_client.job.add(batchmodels.JobAddParameter(
        id=job_id,
        pool_info=batchmodels.PoolInformation(
            auto_pool_specification=batchmodels.AutoPoolSpecification(
                auto_pool_id_prefix=f"{PREFIX}-auto",
                pool_lifetime_option=batchmodels.PoolLifetimeOption.job,
                keep_alive=False,
                pool=batchmodels.PoolSpecification(
                    vm_size=POOL_VM_SIZE, target_dedicated_nodes=1,
                    virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
                        image_reference=image, node_agent_sku_id=sku),
                    start_task=batchmodels.StartTask(
                        command_line="/bin/bash -c \"echo ready > "
                                     "$AZ_BATCH_NODE_SHARED_DIR/ready.txt\"",
                        wait_for_success=True))))))
    try:
        batch_client.task.add(job_id, batchmodels.TaskAddParameter(
            id="AutoTask",
            command_line="/bin/bash -c \"cat $AZ_BATCH_NODE_SHARED_DIR/ready.txt\""))
        [task] = wait_for_tasks_to_complete(batch_client, job_id, datetime.timedelta(minutes=10))
        pool_id = batch_client.job.get(job_id).execution_info.pool_id
        stdout = _read_stream_as_string(
            batch_client.file.get_from_task(job_id, "AutoTask", "stdout.txt"))
        # As Batch documents: a job with no tasks has all its tasks complete, so
        # terminatejob is set once the tasks are in; here they are done, so the job
        # ends now, and its auto pool (poolLifetimeOption job) with it.
        batch_client.job.patch(job_id, batchmodels.JobPatchParameter(
            on_all_tasks_complete=batchmodels.OnAllTasksComplete.terminate_job))
        job_state = batch_client.job.get(job_id).state.value
        return {"task": {"state": task.state.value, "exit_code": task.execution_info.exit_code},
                "stdout": stdout, "pool_id": pool_id, "job_state": job_state}
    finally:
        batch_client.job.delete(job_id)


if __name__ == "__main__":
    main({"sample": sample, "auto_pool": auto_pool})
