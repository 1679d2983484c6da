"""``hpcbatch pool``: pools of compute nodes, and their autoscale formulas."""

from __future__ import annotations

import re
from typing import Any

import click

from hpcbatch.client.cli.common import (
    NODE_COLUMNS,
    NODE_DEALLOCATION_OPTIONS,
    Column,
    action_command,
    as_json,
    client,
    emit,
    id_of,
    json_file_option,
    list_command,
    note,
    output_option,
    parse_duration,
    pool_id_option,
    read_command,
    read_text,
    request_body,
    status,
    timeout_option,
)
from hpcbatch.client.cli.set_commands import pool_set  # "pool set"

POOL_COLUMNS: list[Column] = [
    ("Id", "id"), ("VM size", "vmSize"), ("State", "state"), ("Allocation", "allocationState"),
    ("Nodes (current/target)",
     lambda p: f"{p.get('currentDedicatedNodes', 0)}/{p.get('targetDedicatedNodes', 0)}"),
    ("Slots", lambda p: p.get("taskSlotsPerNode") or p.get("maxTasksPerNode") or 1),
]


@click.group()
def pool() -> None:
    """Manage pools of compute nodes."""


@pool.command("create")
@json_file_option("pool (PoolAddParameter)")
@click.option("--id", "pool_id", help="Pool ID.")
@click.option("--vm-size",
              help="Inventory label selecting hosts ('any': every host).  [default: any]")
@click.option("--target-dedicated-nodes", type=click.IntRange(min=0), help="Number of nodes.")
@click.option("--task-slots-per-node", type=click.IntRange(1, 256), help="Task slots per node.")
@click.option("--node-fill-type", type=click.Choice(["spread", "pack"]), help="Task placement.")
@click.option("--enable-inter-node-communication", is_flag=True, default=None,
              help="Allow multi-instance (MPI) tasks.")
@click.option("--start-task-command-line", help="Command line of the start task.")
@click.option("--start-task-wait-for-success", is_flag=True, default=None,
              help="Nodes are idle only after the start task succeeded.")
def pool_create(json_file: str | None, pool_id: str | None, vm_size: str | None,
                target_dedicated_nodes: int | None, task_slots_per_node: int | None,
                node_fill_type: str | None, enable_inter_node_communication: bool | None,
                start_task_command_line: str | None,
                start_task_wait_for_success: bool | None) -> None:
    """Create a pool from options or from a JSON file ("Pool - Add")."""
    def build() -> dict[str, Any]:
        if start_task_wait_for_success and not start_task_command_line:
            raise click.UsageError(
                "--start-task-wait-for-success needs --start-task-command-line.")
        body: dict[str, Any] = {"id": pool_id, "vmSize": vm_size or "any",
                                "targetDedicatedNodes": target_dedicated_nodes,
                                "taskSlotsPerNode": task_slots_per_node,
                                "enableInterNodeCommunication": enable_inter_node_communication}
        if node_fill_type:
            body["taskSchedulingPolicy"] = {"nodeFillType": node_fill_type}
        if start_task_command_line:
            body["startTask"] = {"commandLine": start_task_command_line}
            if start_task_wait_for_success is not None:  # else Batch's default: true
                body["startTask"]["waitForSuccess"] = start_task_wait_for_success
        return {k: v for k, v in body.items() if v is not None}

    body = request_body(json_file, build, required=["pool_id"])
    client().create_pool(body)
    note(f"created pool {id_of(body)}")


list_command(pool, "list", "List pools.",
             lambda c, filter_, select: c.list_pools_json(filter_, select),
             columns=POOL_COLUMNS, example="state eq 'active'")

def _show_pool(c: Any, pool_id: str) -> Any:
    """The pool's JSON; its hpcbatch warnings (tasks sharing the agent's identity) go to stderr."""
    body = c.get_pool_json(pool_id)
    for warning in body.get("hpcbatchWarnings") or []:
        nodes = ", ".join(v["value"] for v in warning.get("values") or [])
        note(f"warning: {warning['code']}: {warning['message']} Nodes: {nodes}")
    return body


read_command(pool, "show", "Show a pool.", _show_pool, pool_id_option)

list_command(
    pool, "usage-metrics",
    'List core hours per pool per 30-minute interval ("Pool - List Usage Metrics").',
    lambda c, start_time, end_time, filter_: c.list_pool_usage_metrics_json(
        start_time, end_time, filter_),
    click.option("--start-time", help="ISO 8601 time: the intervals from the one holding it "
                                      "(default: the last interval that has ended)."),
    click.option("--end-time", help="ISO 8601 time: the intervals up to it."),
    columns=[("Pool", "poolId"), ("Start", "startTime"), ("End", "endTime"),
             ("VM size", "vmSize"), ("Core hours", "totalCoreHours")],
    example="poolId eq 'mypool'", server=("filter",))

action_command(
    pool, "resize", 'Resize a pool ("Pool - Resize").',
    lambda c, pool_id, target_dedicated_nodes, node_deallocation_option: c.resize_pool(
        pool_id, target_dedicated_nodes, node_deallocation_option),
    "resizing pool {pool_id} to {target_dedicated_nodes} nodes",
    pool_id_option,
    click.option("--target-dedicated-nodes", type=click.IntRange(min=0), required=True,
                 help="New number of nodes."),
    click.option("--node-deallocation-option", type=click.Choice(NODE_DEALLOCATION_OPTIONS),
                 help="What happens to tasks on removed nodes (default requeue)."))

action_command(pool, "delete", "Delete a pool; its hosts go back to the inventory.",
               lambda c, pool_id: c.delete_pool(pool_id), "deleting pool {pool_id}",
               pool_id_option, confirm="Delete pool {pool_id}?")


@pool.command("wait")
@pool_id_option
@timeout_option(300.0)
@output_option
def pool_wait(pool_id: str, timeout_s: float) -> None:
    """Wait until a pool is steady and its nodes settled; print the nodes.

    Exit 1 when the pool's last resize failed (its resizeErrors, such as
    InsufficientInventory: the pool holds fewer nodes than its target), or a
    node ended unusable, or starttaskfailed (its start task failed with
    waitForSuccess); each is printed on stderr with its error. A start task
    that fails without waitForSuccess leaves its node idle, as in Batch: see
    ``node show`` (startTaskInfo). Exit 2 on timeout.
    """
    c = client()
    with status(f"Waiting for pool {pool_id} ..."):
        nodes = c.wait_for_pool(pool_id, timeout_s=timeout_s)
    emit(nodes, NODE_COLUMNS)
    errors = c.get_pool_json(pool_id).get("resizeErrors") or []
    for error in errors:
        note(f"pool {pool_id}: resize error {error.get('code')}: {error.get('message')}")
    failed = [n for n in nodes if n.state in ("unusable", "starttaskfailed")]
    for n in failed:
        first = n.errors[0] if n.errors else None
        why = f"{first.code}: {first.message}" if first else "no error recorded"
        if n.state == "starttaskfailed" and n.start_task_info is not None:
            why = f"start task exit code {n.start_task_info.exit_code}; {why}"
        note(f"pool {pool_id}: node {n.id} is {n.state}: {why}")
    if errors or failed:
        click.get_current_context().exit(1)


# ---------------------------------------------------------------------- autoscale


@pool.group("autoscale")
def pool_autoscale() -> None:
    """Enable, disable and try out a pool's autoscale formula."""


def formula_options(f: Any) -> Any:
    """``--formula F`` / ``--formula-file FILE``: the autoscale formula (exactly one of them)."""
    f = click.option("--formula-file", type=click.Path(dir_okay=False, allow_dash=True),
                     help="File holding the formula ('-': stdin).")(f)
    return click.option("--formula", help="The autoscale formula, e.g. "
                                          "'$TargetDedicatedNodes = 2;'.")(f)


def _formula(formula: str | None, formula_file: str | None) -> str:
    """The formula of ``--formula`` or ``--formula-file``; a usage error unless exactly one."""
    if (formula is None) == (formula_file is None):
        raise click.UsageError("give --formula or --formula-file (one of them).")
    if formula is not None:
        return formula
    assert formula_file is not None
    return read_text(formula_file, "--formula-file")


def _autoscale_variables(results: str) -> list[dict[str, str]]:
    """``$a=1;$b=[1,2]`` (``autoScaleRun.results``) as ``[{name, value}, ...]``."""
    rows = []
    for item in re.split(r";(?=\$)", results.strip().rstrip(";")):
        if item:
            name, _, value = item.partition("=")
            rows.append({"name": name, "value": value})
    return rows


@pool_autoscale.command("enable")
@pool_id_option
@formula_options
@click.option("--evaluation-interval", callback=parse_duration,
              help="ISO 8601 duration between evaluations, 5 min to 168 h (default PT15M).")
def pool_autoscale_enable(pool_id: str, formula: str | None, formula_file: str | None,
                          evaluation_interval: str | None) -> None:
    """Enable autoscale on a pool ("Pool - Enable Auto Scale"); it evaluates at once."""
    text = _formula(formula, formula_file)
    client().enable_pool_auto_scale(pool_id, text, evaluation_interval)
    note(f"enabled autoscale on pool {pool_id}")


action_command(
    pool_autoscale, "disable",
    'Disable autoscale on a pool ("Pool - Disable Auto Scale"); the target stays as is.',
    lambda c, pool_id: c.disable_pool_auto_scale(pool_id), "disabled autoscale on pool {pool_id}",
    pool_id_option)


@pool_autoscale.command("evaluate")
@pool_id_option
@formula_options
@output_option
def pool_autoscale_evaluate(pool_id: str, formula: str | None, formula_file: str | None) -> None:
    """Evaluate a formula on a pool without applying it ("Pool - Evaluate Auto Scale").

    Prints each variable's value (with --output json, the AutoScaleRun). The
    pool must have autoscale enabled. Exit 1 when the evaluation failed.
    """
    text = _formula(formula, formula_file)
    run_ = client().evaluate_pool_auto_scale(pool_id, text)
    run_.pop("odata.metadata", None)
    if as_json():
        emit(run_)
    else:
        emit(_autoscale_variables(run_.get("results") or ""),
             [("Variable", "name"), ("Value", "value")])
    error = run_.get("error")
    if error:
        details = "; ".join(str(v.get("value")) for v in error.get("values") or [])
        click.echo(f"error: {error.get('code')}: {error.get('message')}"
                   + (f" ({details})" if details else ""), err=True)
        click.get_current_context().exit(1)


pool.add_command(pool_set)
