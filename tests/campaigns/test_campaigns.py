"""The pure parts of benchmark campaigns: the file, parameter spaces, figures, references,
statistics and reports (no service; the testbed runs are in tests/test_bench.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.campaigns.figures import check_sanity, extract
from hpcbatch.campaigns.model import (
    CampaignError,
    FigureSpec,
    Sanity,
    builtin_campaigns,
    convert,
    load_campaign,
    parse_campaign,
)
from hpcbatch.campaigns.report import plot_summary, render, table_rows, write_html
from hpcbatch.campaigns.results import (
    check_references,
    groups_of,
    load_summary,
    make_summary,
)
from hpcbatch.campaigns.space import expand, parse_override, plan_runs, values_of
from hpcbatch.campaigns.stats import compare, p_value
from hpcbatch.client.bench import task_body


def campaign(**extra: Any) -> dict[str, Any]:
    bench = {"name": "b", "command": "{python} prog -n {msg_size}",
             "figures": [{"name": "t", "regex": r"t=(?P<t>\S+)", "source_unit": "s",
                          "unit": "us"}]}
    bench.update(extra.pop("bench", {}))
    return {"name": "c", "variables": {"python": "python3"},
            "parameters": {"nodes": [1, 2], "msg_size": [8]}, "benchmarks": [bench], **extra}


# ------------------------------------------------------------------ campaign file


def test_builtin_campaigns_load_and_plan() -> None:
    names = builtin_campaigns()
    assert set(names) == {"mpi4py-helloworld", "mpi4py-ringtest", "mpi4py-pingpong",
                          "osu-collectives"}
    assert all(names.values())
    ring = plan_runs(load_campaign("builtin:mpi4py-ringtest"))
    assert len(ring) == 3 * 2 * 3
    assert {(r.nodes, r.ppn) for r in ring} == {(n, p) for n in (1, 2, 4) for p in (1, 2)}
    ping = plan_runs(load_campaign("builtin:mpi4py-pingpong"))
    assert {(r.nodes, r.ppn) for r in ping} == {(1, 2), (2, 1)}  # zipped, not crossed
    osu = plan_runs(load_campaign("builtin:osu-collectives"))
    assert {r.benchmark for r in osu} == {"allreduce", "bcast"}
    assert osu[0].argv[:3] == ["python3", "-m", "hpcbatch.campaigns.osu"]


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(CampaignError, match="built-in campaigns: mpi4py-helloworld"):
        load_campaign("builtin:nope")


@pytest.mark.parametrize("change, match", [
    ({"name": "bad name"}, "campaign name 'bad name'"),
    ({"mpi": "lam"}, r"mpi: Input should be 'mpich', 'openmpi', 'intelmpi' or 'none'"),
    ({"repeats": 0}, "repeats: Input should be greater than or equal to 1"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"bench": {"figures": [{"name": "t", "regex": "(", "unit": "s"}]}},
     r"benchmarks.0.figures.0: .*does not compile"),
    ({"bench": {"figures": [{"name": "t", "regex": "x=(?P<v>1)", "unit": "s"}]}},
     "has no named group 'value'"),
    ({"bench": {"figures": [{"name": "t", "regex": "(?P<t>1)", "unit": "s",
                             "source_unit": "MB/s"}]}}, "cannot convert 'MB/s' to 's'"),
    ({"bench": {"references": {"*": {"x": [1, -0.1, 0.1, "us"]}}}}, "reference \\* x names no"),
    ({"bench": {"references": {"*": {"t": [1, -0.1, 0.1, "ms"]}}}}, "is in 'ms', the figure"),
    ({"bench": {"references": {"*": {"t": [1, 0.1, 0.1]}}}}, "lower tolerance 0.1 must be <= 0"),
    ({"bench": {"references": {"host:a": {"t": [1, -0.1, 0.1]}}}}, "scope 'host:a' must be"),
    ({"bench": {"references": {"*": {"t[nodes]": [1, -0.1, 0.1]}}}}, "is not name=value"),
])
def test_invalid_campaigns_name_the_field(change: dict[str, Any], match: str) -> None:
    with pytest.raises(CampaignError, match=match):
        parse_campaign(campaign(**change), "c.yaml")


def test_load_campaign_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="cannot read campaign"):
        load_campaign(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(CampaignError, match="not valid YAML"):
        load_campaign(bad)
    bad.write_text("- a list")
    with pytest.raises(CampaignError, match="must be a mapping"):
        load_campaign(bad)


def test_units_convert_within_their_kind() -> None:
    assert convert(2.0, "ms", "us") == pytest.approx(2000.0)
    assert convert(3.0, "GB/s", "MB/s") == pytest.approx(3000.0)
    assert convert(7.0, "ranks", "ranks") == 7.0
    with pytest.raises(ValueError, match="cannot convert 'us' to 'MB/s'"):
        convert(1.0, "us", "MB/s")


# ------------------------------------------------------------------ parameter space


def test_ranges_and_their_errors() -> None:
    assert values_of({"start": 1, "stop": 7, "step": 3}) == [1, 4, 7]
    assert values_of({"start": 1, "stop": 1000, "factor": 10}) == [1, 10, 100, 1000]
    # float ranges are inclusive too, and their values are the decimals written
    assert values_of({"start": 0.1, "stop": 0.7, "step": 0.1}) == [0.1, 0.2, 0.3, 0.4, 0.5,
                                                                    0.6, 0.7]
    assert values_of({"start": 0.1, "stop": 0.9, "factor": 3}) == [0.1, 0.3, 0.9]
    assert values_of({"start": 1, "stop": 2, "step": 0.5}) == [1, 1.5, 2]
    assert values_of(5) == [5]
    for spec, match in [({"start": 1}, "a range is"), ({"start": 3, "stop": 1}, "is empty"),
                        ({"start": 1, "stop": 5, "step": 0}, "step must be > 0"),
                        ({"start": 0, "stop": 5, "factor": 2}, "start > 0 and factor > 1"),
                        ({"start": 1, "stop": 10**9}, "more than 10000"), ([], "is empty")]:
        with pytest.raises(CampaignError, match=match):
            values_of(spec, "p")


def test_expand_crosses_and_zips() -> None:
    points = expand({"a": [1, 2], "b": ["x", "y"], "c": [True]}, [["a", "b"]])
    assert points == [{"a": 1, "b": "x", "c": True}, {"a": 2, "b": "y", "c": True}]
    assert len(expand({"a": [1, 2], "b": [1, 2, 3]})) == 6
    assert expand({}) == [{}]
    with pytest.raises(CampaignError, match="different lengths"):
        expand({"a": [1, 2], "b": [1]}, [["a", "b"]])
    with pytest.raises(CampaignError, match="'z', which is not a parameter"):
        expand({"a": [1]}, [["a", "z"]])


def test_plan_fills_words_without_a_shell_and_overrides() -> None:
    camp = parse_campaign(campaign(repeats=2, bench={
        "command": "{python} -c 'print(1)' {msg_size} '{python}; rm -rf /'",
        "environment": {"SIZE": "{msg_size}"}}))
    runs = plan_runs(camp, {"python": ["/my py"], "msg_size": [1, 2]})
    assert len(runs) == 2 * 2 * 2
    first = runs[0]
    assert first.argv == ["/my py", "-c", "print(1)", "1", "/my py; rm -rf /"]
    assert first.environment == {"SIZE": "1"}
    assert [r.task_id for r in runs[:3]] == ["b-000-r0", "b-000-r1", "b-001-r0"]
    with pytest.raises(CampaignError, match="--set nope: not a parameter or variable"):
        plan_runs(camp, {"nope": [1]})
    with pytest.raises(CampaignError, match=r"placeholder \{other\} is neither"):
        plan_runs(parse_campaign(campaign(bench={"command": "x {other}"})))
    with pytest.raises(CampaignError, match="nodes must be an integer >= 1"):
        plan_runs(camp, {"nodes": [0]})
    with pytest.raises(CampaignError, match="no benchmark zz"):
        plan_runs(camp, only=["zz"])
    assert parse_override("nodes=1,2,4") == ("nodes", [1, 2, 4])
    assert parse_override("python=/usr/bin/python3") == ("python", ["/usr/bin/python3"])
    with pytest.raises(CampaignError, match="NAME=VALUE"):
        parse_override("nodes")
    # a value YAML cannot read is the user's to fix, named, not a traceback
    with pytest.raises(CampaignError, match=r"value '\{start: 4' is not valid YAML"):
        parse_override("max_size={start: 4, stop: 16, factor: 2}")


def test_task_body_is_a_multi_instance_mpiexec_task() -> None:
    camp = parse_campaign(campaign(time_limit_s=90, retries=1))
    run = plan_runs(camp, {"nodes": [2], "ppn": [3]})[0]
    body = task_body(camp, run)
    assert body["multiInstanceSettings"] == {"numberOfInstances": 2}
    assert body["constraints"] == {"maxWallClockTime": "PT90S", "maxTaskRetryCount": 1}
    words = shlex.split(body["commandLine"])
    assert words[:2] == ["/bin/sh", "-c"]
    assert "-ppn 3 -n 6 python3 prog -n 8" in words[2]
    none = parse_campaign(campaign(mpi="none"))
    assert task_body(none, plan_runs(none)[0])["commandLine"] == "python3 prog -n 8"


# ------------------------------------------------------------------ figures, sanity


def test_extract_figures_with_labels_and_units() -> None:
    specs = [FigureSpec(name="bw", regex=r"^\s*(?P<msg_size>\d+)\s+(?P<bw>[0-9.]+)", unit="MB/s"),
             FigureSpec(name="lat", regex=r"lat (?P<value>\S+)", source_unit="ns", unit="us",
                        stream="stderr")]
    figs = extract(specs, "   1   0.75\n1024 686.5\nnot a number\n", "lat 1500\nlat nan\n")
    assert [(f.name, f.value, f.unit, f.labels) for f in figs] == [
        ("bw", 0.75, "MB/s", {"msg_size": 1}), ("bw", 686.5, "MB/s", {"msg_size": 1024}),
        ("lat", 1.5, "us", {})]


def test_sanity_reports_every_failed_condition() -> None:
    specs = [FigureSpec(name="t", regex=r"t=(?P<t>\S+)", unit="s")]
    sanity = Sanity(must_match=["done"], must_not_match=["(?i)error"])
    assert check_sanity(sanity, specs, extract(specs, "t=1\ndone\n", ""), "t=1\ndone\n", "",
                        0) == []
    problems = check_sanity(sanity, specs, [], "", "Error: boom\n", 139, "UserError: failed")
    assert problems == ["task failed: UserError: failed", "exit code 139, expected 0",
                        "pattern 'done' not found in the output",
                        "pattern '(?i)error' found in the output: 'Error'",
                        "figure t not found in stdout (regex 't=(?P<t>\\\\S+)')"]


# ------------------------------------------------------------------ references


def _runs(values: dict[int, list[float]]) -> list[dict[str, Any]]:
    return [{"taskId": f"b-{n}-{i}", "benchmark": "b", "params": {"nodes": n}, "repeat": i,
             "sanity": [], "figures": [{"name": "t", "value": v, "unit": "us", "labels": {}}]}
            for n, vals in values.items() for i, v in enumerate(vals)]


def test_references_most_specific_scope_and_selectors() -> None:
    camp = parse_campaign(campaign(bench={"references": {
        "*": {"t": [10, -0.5, 0.5, "us"]},
        "label:fast": {"t": [1, None, 0.1, "us"]},
        "pool:p": {"t[nodes=2]": [20, -0.1, 0.1]}}}))
    groups = groups_of(_runs({1: [9, 11, 10], 2: [21, 19, 20]}))
    checks = check_references(camp, groups, "q", ["slow"])
    assert [(c.params["nodes"], c.passed) for c in checks] == [(1, True), (2, False)]
    assert "outside [5, 15] us" in checks[1].describe() and "+100.0%" in checks[1].describe()
    checks = check_references(camp, groups, "p", ["fast"])
    # label:fast beats *; pool:p adds its own key for nodes=2
    assert [(c.key, c.params["nodes"], c.passed) for c in checks] == [
        ("t", 1, False), ("t", 2, False), ("t[nodes=2]", 2, True)]
    summary = make_summary(camp, job_id="j", pool_id="q", labels=["slow"],
                           runs=_runs({1: [10.0]}), start_time="s", end_time="e")
    assert summary["passed"] is True
    assert [c["passed"] for c in summary["checks"]] == [True]
    assert load_summary(json.loads(json.dumps(summary)))[0] == camp
    with pytest.raises(CampaignError, match="not a campaign summary"):
        load_summary({"schema": "other"})


def test_insane_runs_are_left_out_of_groups() -> None:
    runs = _runs({1: [1.0, 2.0]})
    runs[1]["sanity"] = ["exit code 1, expected 0"]
    (group,) = groups_of(runs)
    assert group.values == [1.0]


# ------------------------------------------------------------------ statistics


def _groups(values: list[float], unit: str = "ms") -> list[dict[str, Any]]:
    return [{"benchmark": "b", "figure": "t", "unit": unit, "params": {"nodes": 1},
             "labels": {}, "values": values}]


def test_compare_needs_significance_and_size() -> None:
    base = [200.1, 200.3, 200.2]
    (same,) = compare(_groups(base), _groups([200.2, 200.4, 200.1]))
    assert same.verdict == "same"
    (slow,) = compare(_groups(base), _groups([600.2, 600.1, 600.4]))
    assert slow.verdict == "regression" and slow.p is not None and slow.p < 0.05
    assert slow.change == pytest.approx(2.0, rel=1e-3)
    # significant but small: under the threshold
    (small,) = compare(_groups(base), _groups([201.1, 201.3, 201.2]))
    assert small.p is not None and small.p < 0.05 and small.verdict == "same"
    # bandwidth: lower is worse
    (bw,) = compare(_groups([100.0, 101, 99], "MB/s"), _groups([50.0, 51, 49], "MB/s"))
    assert bw.verdict == "regression"
    # one run on a side: no test, no verdict
    (one,) = compare(_groups([200.0]), _groups([900.0]))
    assert one.p is None and one.verdict == "same"
    assert p_value([1, 1, 1], [1, 1, 1]) == 1.0 and p_value([1, 1], [2, 2]) == 0.0
    assert p_value([1, 2, 3, 4], [11, 12, 13, 14], "mannwhitney") == pytest.approx(0.0286,
                                                                                   abs=1e-3)
    with pytest.raises(ValueError, match="expected one of: welch, mannwhitney"):
        p_value([1, 2], [1, 2], "t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        compare([], [], alpha=1.5)


# ------------------------------------------------------------------ reports


def _sweep_summary() -> dict[str, Any]:
    camp = parse_campaign(campaign(repeats=2, bench={"figures": [
        {"name": "lat", "regex": r"(?P<msg_size>\d+) (?P<lat>\S+)", "unit": "us"}]}))
    runs = []
    for nodes in (1, 2, 4):
        for rep in range(2):
            figures = [{"name": "lat", "value": (1 + nodes) * size ** 0.5 + rep,
                        "unit": "us", "labels": {"msg_size": size}} for size in (1, 64, 4096)]
            runs.append({"taskId": f"b-{nodes}-{rep}", "benchmark": "b",
                         "params": {"nodes": nodes}, "repeat": rep,
                         "sanity": [], "figures": figures})
    runs.append({"taskId": "b-x", "benchmark": "b", "params": {"nodes": 1},
                 "repeat": 9, "sanity": ["exit code 1, expected 0"], "figures": []})
    return make_summary(camp, job_id="j", pool_id="p", labels=[], runs=runs, start_time="s",
                        end_time="e")


def test_table_formats() -> None:
    rows = table_rows(_sweep_summary())
    assert len(rows) == 9 + 1 and rows[-1]["status"] == "SANITY"
    md = render(rows, "markdown").splitlines()
    assert md[0] == ("| benchmark | point | figure | n | mean | stdev | min | max | unit | "
                     "reference | status |")
    assert md[2].startswith("| b | nodes=1 msg_size=1 | lat | 2 | 2.5 |")
    assert render(rows, "csv").splitlines()[1].startswith("b,nodes=1 msg_size=1,lat,2,2.5,")
    assert json.loads(render(rows, "json"))[0]["mean"] == 2.5
    assert render(rows, "table").splitlines()[0].split() == list(rows[0])
    with pytest.raises(ValueError, match="expected one of: table, markdown, csv, json"):
        render(rows, "xml")


def test_plots_are_pngs_with_ink(tmp_path: Path) -> None:
    from PIL import Image

    summary = _sweep_summary()
    pngs = plot_summary(summary, tmp_path)
    assert sorted(p.name for p in pngs) == ["b-lat-size.png", "b-lat-spread.png"]
    for p in pngs:
        with Image.open(p) as img:
            assert img.size == (800, 500)
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    page = write_html(summary, table_rows(summary), pngs, tmp_path / "r.html").read_text()
    assert page.count("<img ") == 2 and "FAILED" in page


# ------------------------------------------------------------------ built-in programs


@pytest.mark.parametrize("campaign_name, bench_name, argv, figures", [
    ("osu-collectives", "allreduce", ["-m", "hpcbatch.campaigns.osu", "allreduce", "-x", "64",
                                      "-i", "5", "-w", "1"], {"latency": 5}),
    ("osu-collectives", "bcast", ["-m", "hpcbatch.campaigns.osu", "bcast", "-x", "64", "-i",
                                  "5"], {"latency": 5}),
    ("mpi4py-helloworld", "helloworld", ["-m", "mpi4py.bench", "helloworld"], {"processes": 1}),
    ("mpi4py-pingpong", "pingpong", ["-m", "mpi4py.bench", "pingpong", "-n", "64", "-l", "10"],
     {"bandwidth": 7, "latency": 7}),
])
def test_builtin_figures_parse_the_programs_output(campaign_name: str, bench_name: str,
                                                    argv: list[str],
                                                    figures: dict[str, int]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(["mpiexec", "-n", "2", sys.executable, *argv], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    bench = load_campaign(f"builtin:{campaign_name}").benchmark(bench_name)
    found = extract(bench.figures, done.stdout, done.stderr)
    counts = {name: sum(f.name == name for f in found) for name in figures}
    assert counts == figures, done.stdout
    assert all(f.value >= 0 for f in found)
    assert check_sanity(bench.sanity, bench.figures, found, done.stdout, done.stderr, 0) == []
    if "processes" in figures:
        assert found[0].value == 2
