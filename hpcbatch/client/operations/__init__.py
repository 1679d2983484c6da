"""The resource operations of :class:`~hpcbatch.client.sdk.BatchClient`, a mixin per concern.

Each class adds the Batch operations of a group of resources to
:class:`~hpcbatch.client.rest.RestClient` (the signed transport):
:class:`~hpcbatch.client.operations.account.AccountOperations` (dashboard,
inventory, applications, certificates),
:class:`~hpcbatch.client.operations.pools.PoolOperations` (pools, nodes, node
files and users), :class:`~hpcbatch.client.operations.jobs.JobOperations` (jobs,
job schedules) and :class:`~hpcbatch.client.operations.tasks.TaskOperations`
(tasks and their files). ``BatchClient`` inherits them all.
"""
