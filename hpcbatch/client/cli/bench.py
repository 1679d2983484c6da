"""``hpcbatch bench``: benchmark campaigns -- run, report, compare (see :mod:`hpcbatch.campaigns`)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.cli.common import (
    as_json,
    client,
    filter_option,
    note,
    output_option,
    query_locally,
    select_option,
)
from hpcbatch.client.cli.output import open_output_storage, storage_url_option

TABLE_FORMATS = ("table", "markdown", "csv", "json")


@click.group()
def bench() -> None:
    """Benchmark campaigns: parameter sweeps of MPI programs run as Batch work.

    A campaign file (YAML) names benchmarks, their parameter space, the figures
    to read from their output, sanity conditions and performance references.
    `bench run` runs one (a job, a multi-instance task per run), `bench report`
    tabulates and plots its results, `bench compare` tests two campaigns for a
    regression. Built-in campaigns: `hpcbatch bench list`.
    """


def _load(source: str) -> Any:
    from hpcbatch.campaigns.model import load_campaign

    return load_campaign(source)


@bench.command("list")
@filter_option("startswith(name, 'builtin:osu')")
@select_option("name")
@output_option
def bench_list(filter_: str | None, select: str | None) -> None:
    """List the built-in campaigns (run them as builtin:NAME)."""
    from hpcbatch.campaigns.model import builtin_campaigns

    rows = query_locally([{"name": f"builtin:{k}", "description": v}
                          for k, v in builtin_campaigns().items()], filter_, select)
    if as_json():
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo("\n    ".join(str(v) for v in row.values()))


def _parse_sets(values: tuple[str, ...]) -> dict[str, list[Any]]:
    from hpcbatch.campaigns.space import parse_override

    out: dict[str, list[Any]] = {}
    for text in values:
        name, vals = parse_override(text)
        out[name] = vals
    return out


def _failures_text(summary: dict[str, Any]) -> str:
    lines = []
    for r in summary["runs"]:
        if r["sanity"]:
            lines.append(f"sanity: {r['taskId']} ({r['benchmark']} "
                         + " ".join(f"{k}={v}" for k, v in r["params"].items())
                         + f" repeat {r['repeat']}): " + "; ".join(r["sanity"]))
            tail = (r.get("stderrTail") or "").strip()
            if tail:
                lines.append("  stderr:\n" + "\n".join(f"    {ln}" for ln in tail.splitlines()[-20:]))
    for c in summary["checks"]:
        if c["passed"] is False:
            lines.append(f"reference: {c['message']}")
    return "\n".join(lines)


@bench.command("run")
@click.argument("campaign")
@click.option("--pool-id", help="Pool to run on (default: the campaign's `pool`).")
@click.option("--job-id", help="Job to create for the campaign.  [default: "
                               "bench-<name>-<UTC timestamp>]")
@click.option("--set", "sets", multiple=True, metavar="NAME=V1[,V2...]",
              help="Replace a parameter's values or a variable's value (repeatable), e.g. "
                   "--set nodes=1,2 --set python=/opt/py/bin/python3.")
@click.option("--benchmark", "only", multiple=True,
              help="Run only this benchmark of the campaign (repeatable).")
@click.option("--repeats", type=click.IntRange(min=1), help="Override the campaign's repeats.")
@click.option("--dry-run", is_flag=True, help="Print the planned tasks; add nothing.")
@click.option("--summary-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the summary JSON to this file.")
@storage_url_option
@output_option
def bench_run(campaign: str, pool_id: str | None, job_id: str | None, sets: tuple[str, ...],
              only: tuple[str, ...], repeats: int | None, dry_run: bool,
              summary_file: Path | None, storage_url: str | None) -> None:
    """Run CAMPAIGN (a YAML file, or builtin:NAME) as a job of multi-instance tasks.

    Every run (benchmark x parameter point x repeat) is one multi-instance task
    of `nodes` instances running the command under the campaign's MPI with `ppn`
    ranks per node. Each run's figures are saved as its task's TaskOutput
    figures.json (its stdout/stderr are its TaskLog outputs) and the summary as
    the job's JobOutput summary.json, by the Batch File Conventions: `hpcbatch
    output list --job-id JOB` finds them. Exits 0 when every run passed its
    sanity checks and every figure is within its references, else 1 with a
    table of what failed by how much. Runs the pool can never start (more
    nodes than its target without autoscale, or more than one node without
    inter-node communication) are refused before the job is created. Ctrl-C, SIGTERM and SIGHUP terminate the
    campaign's job (so its running task) and exit 130, 143, 129. --dry-run
    lists each planned task with every parameter that varies.

    \b
    Example:
        hpcbatch bench run builtin:mpi4py-ringtest --pool-id p --set nodes=1,2
    """
    from hpcbatch.campaigns.space import plan_runs
    from hpcbatch.client.bench import CampaignRunner, task_body

    camp = _load(campaign)
    if repeats is not None:
        camp = camp.model_copy(update={"repeats": repeats})
    overrides = _parse_sets(sets)
    runs = plan_runs(camp, overrides, only)
    pool = pool_id or camp.pool
    if not pool:
        raise click.UsageError("give --pool-id (the campaign names no `pool`)")
    stamp = datetime.now(UTC)
    job = job_id or f"bench-{camp.name}-{stamp:%Y%m%d-%H%M%S}"
    if dry_run:
        bodies = [task_body(camp, r) for r in runs]
        if as_json():
            click.echo(json.dumps({"jobId": job, "poolId": pool, "tasks": bodies}, indent=2))
        else:
            # nodes, and every other parameter whose value is not the same in every run
            shown = ["nodes", *[k for k in dict.fromkeys(k for r in runs for k in r.params)
                                if k != "nodes"
                                and len({repr(r.params.get(k)) for r in runs}) > 1]]
            for r, b in zip(runs, bodies):
                point = "  ".join(f"{k}={r.params[k]}" for k in shown if k in r.params)
                click.echo(f"{b['id']}  {point}  {b['commandLine']}")
            note(f"{len(bodies)} task(s) in job {job} on pool {pool} (dry run: nothing added)")
        return
    storage = None
    try:
        storage = open_output_storage(storage_url)
    except HpcbatchError as exc:
        note(f"warning: outputs are not saved: {exc.message}")
    from hpcbatch.client.cli.mpi import check_pool_fits

    check_pool_fits(client().get_pool_json(pool), [r.nodes for r in runs], "parameter nodes")
    runner = CampaignRunner(client(), camp, pool, job, storage=storage)
    note(f"campaign {camp.name}: {len(runs)} run(s) as job {job} on pool {pool}")
    summary = _run_with_progress(runner, runs, overrides, enabled=not as_json())
    if summary_file is not None:
        summary_file.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if as_json():
        click.echo(json.dumps(summary, indent=1))
    else:
        from hpcbatch.campaigns.report import render, table_rows

        click.echo(render(table_rows(summary), "table"), nl=False)
    failures = _failures_text(summary)
    if failures:
        click.echo(failures, err=True)
    ok = sum(1 for r in summary["runs"] if not r["sanity"])
    failed_checks = sum(1 for c in summary["checks"] if c["passed"] is False)
    note(f"job {job}: {ok}/{len(summary['runs'])} run(s) sane, {failed_checks} reference "
         f"check(s) failed: {'PASSED' if summary['passed'] else 'FAILED'}")
    click.get_current_context().exit(0 if summary["passed"] else 1)


def _run_with_progress(runner: Any, runs: list[Any], overrides: dict[str, Any], *,
                       enabled: bool) -> dict[str, Any]:
    """Run the campaign (with a progress bar when ``enabled``); Ctrl-C, SIGTERM and
    SIGHUP terminate its job (so its tasks) and exit 130, 143, 129."""
    from hpcbatch.client.cli.mpi import interrupt_on_signals, interrupted_status

    with interrupt_on_signals():
        try:
            return _run(runner, runs, overrides, enabled=enabled)
        except KeyboardInterrupt as exc:  # the runner terminated the job on its way out
            note(f"interrupted: terminated job {runner.job_id}")
            click.get_current_context().exit(interrupted_status(exc))
            raise  # unreachable


def _run(runner: Any, runs: list[Any], overrides: dict[str, Any], *,
         enabled: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if not enabled:
        return dict(runner.run(runs, overrides=overrides))
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        job = bar.add_task(f"{runner.campaign.name}", total=len(runs))
        failed = 0

        def progress(event: str, run: Any, record: dict[str, Any] | None) -> None:
            nonlocal failed
            if event == "running":
                bar.update(job, description=f"{runner.campaign.name}: {run.task_id} running")
            elif event == "done" and record is not None:
                failed += bool(record["sanity"])
                bar.update(job, advance=1, description=f"{runner.campaign.name}: "
                                                        f"{run.task_id} done"
                           + (f" ({failed} failed)" if failed else ""))

        return dict(runner.run(runs, progress=progress, overrides=overrides))


def _read_source(source: str, storage_url: str | None) -> dict[str, Any]:
    """A summary from a file path, or from a campaign job's JobOutput in storage."""
    from hpcbatch.campaigns.results import load_summary
    from hpcbatch.client.bench import read_summary
    from hpcbatch.storage.fs import StorageNotFoundError

    path = Path(source)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HpcbatchError(f"{source} is not JSON: {exc}", code="InvalidSummary") from None
    else:
        try:
            data = read_summary(open_output_storage(storage_url), source)
        except StorageNotFoundError:
            raise HpcbatchError(f"{source} is neither a summary file nor a job with a "
                                "JobOutput summary.json in the storage",
                                code="SummaryNotFound") from None
    return load_summary(data, source)[1]


@bench.command("report")
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(TABLE_FORMATS), default="table",
              show_default=True, help="Table format (stdout).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write PNG plots and a self-contained report.html to this folder.")
@storage_url_option
def bench_report(source: str, fmt: str, plots_dir: Path | None, storage_url: str | None) -> None:
    """Tabulate (and plot) the results of one campaign.

    SOURCE is a campaign job's ID (its JobOutput summary.json is read from
    storage) or a summary file (`bench run --summary-file`). The table has one
    row per figure, parameter point and label set, over the repeats (n, mean,
    stdev, min, max), with its reference and verdict, then the runs that
    failed their sanity checks. --plots draws the figures against message size,
    against node count with ideal scaling, and their run-to-run spread.
    """
    from hpcbatch.campaigns.report import plot_summary, render, table_rows, write_html

    summary = _read_source(source, storage_url)
    rows = table_rows(summary)
    sys.stdout.write(render(rows, fmt))
    if plots_dir is not None:
        pngs = plot_summary(summary, plots_dir)
        page = write_html(summary, rows, pngs, plots_dir / "report.html")
        note(f"wrote {len(pngs)} plot(s) and {page}")


@bench.command("compare")
@click.argument("baseline")
@click.argument("candidate")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True,
              help="Significance level of the two-sided test over the repeats.")
@click.option("--threshold", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Smallest relative change of a mean that counts (0.05 = 5%).")
@click.option("--test", type=click.Choice(["welch", "mannwhitney"]), default="welch",
              show_default=True, help="Welch's t-test or Mann-Whitney U.")
@click.option("--format", "fmt", type=click.Choice(TABLE_FORMATS), default="table",
              show_default=True, help="Table format (stdout).")
@storage_url_option
def bench_compare(baseline: str, candidate: str, alpha: float, threshold: float, test: str,
                  fmt: str, storage_url: str | None) -> None:
    """Compare two campaigns (BASELINE, CANDIDATE: job IDs or summary files).

    Every figure at every parameter point both have is compared over the
    repeats: a regression is a change of the mean in the bad direction (up
    for times, down for bandwidths) beyond --threshold whose p-value is below
    --alpha. Exits 1 when CANDIDATE has a regression, else 0.
    """
    from hpcbatch.campaigns.report import comparison_rows, render
    from hpcbatch.campaigns.stats import compare

    a = _read_source(baseline, storage_url)
    b = _read_source(candidate, storage_url)
    better = {}
    for summary in (a, b):
        for bm in summary["campaign"]["benchmarks"]:
            for f in bm["figures"]:
                if f.get("better"):
                    better[(bm["name"], f["name"])] = f["better"] == "lower"
    comps = compare(a["groups"], b["groups"], alpha=alpha, threshold=threshold,
                    test=test, better=better)  # type: ignore[arg-type]
    sys.stdout.write(render(comparison_rows(comps), fmt))
    regressions = [c for c in comps if c.verdict == "regression"]
    note(f"{len(comps)} figure(s) compared, {len(regressions)} regression(s), "
         f"{sum(c.verdict == 'improvement' for c in comps)} improvement(s) "
         f"({test}, alpha {alpha:g}, threshold {threshold:.0%})")
    if not comps:
        note("warning: the two campaigns have no figure in common")
    click.get_current_context().exit(1 if regressions else 0)
