"""The web dashboard in a real headless Chromium against a service with a testbed pool.

What a person sees is checked in the browser: the heat map's cells and colours, each
state a failing node passes through, a 200-task job's counts reaching completion
without a reload, a running task's stdout growing, terminate from the page. Sign-in
and its refusals are checked over plain HTTP too.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests

from hpcbatch.api.dashboard.routes import ACTION_EVENT
from tests.dashboard.conftest import DASK_URL, Env, signed_in_page
from tests.helpers import wait_until

# Where the README's screenshots are written: a temporary folder, unless
# HPCBATCH_SCREENSHOTS names one (``HPCBATCH_SCREENSHOTS=docs`` refreshes the README's).
DOCS = Path(os.environ.get("HPCBATCH_SCREENSHOTS")
            or Path(tempfile.gettempdir()) / "hpcbatch-screenshots")
DOCS.mkdir(parents=True, exist_ok=True)

# The heat map's colours (app.css), as the browser computes them.
COLOURS = {
    "idle": "rgb(67, 160, 71)", "running": "rgb(30, 136, 229)",
    "unusable": "rgb(109, 27, 27)", "rebooting": "rgb(251, 140, 0)",
    "starting": "rgb(253, 216, 53)", "creating": "rgb(176, 190, 197)",
}


def _cells(page: Any, pool: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        f'section.pool[data-pool="{pool}"] .cell',
        "els => els.map(e => ({id: e.dataset.node, state: e.dataset.state,"
        " running: e.dataset.running, colour: getComputedStyle(e).backgroundColor}))")


def _events(env: Env, name: str) -> list[dict[str, Any]]:
    return [e for e in env.service.ctx.events.read() if e["name"] == name]


# --------------------------------------------------------------------- sign-in


def test_without_a_session_every_route_refuses_and_leaks_nothing(env: Env) -> None:
    base = f"{env.endpoint}/dashboard"
    page = requests.get(f"{base}/", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"] == "/dashboard/signin"
    for path in ("/api/pools", "/api/jobs", "/api/jobs/x/tasks", "/api/events", "/api/session",
                 "/static/app.js", "/live/pools", "/api/pools/heat/nodes/x"):
        r = requests.get(f"{base}{path}", timeout=10, stream=True)
        assert r.status_code == 401, path
        assert "heat" not in r.text and "csrf" not in r.text, path
    r = requests.post(f"{base}/api/actions/resizePool", json={"poolId": "heat",
                                                              "targetDedicatedNodes": 0},
                      timeout=10)
    assert r.status_code == 401
    assert env.client.get_pool("heat").target_dedicated_nodes == 3
    # The exemption from SharedKey is the dashboard's alone: the REST API still wants it.
    assert requests.get(f"{env.endpoint}/pools", timeout=10).status_code == 403
    assert requests.get(f"{base}/../pools", timeout=10).status_code == 403
    # Minting a sign-in token takes a SharedKey signature.
    assert requests.post(f"{base}/tokens", timeout=10).status_code == 403
    # A made-up, and a spent, token is refused.
    assert requests.get(f"{base}/signin?token=forged", allow_redirects=False,
                        timeout=10).status_code == 401
    url = env.client.dashboard_sign_in_url()
    first = requests.get(url, allow_redirects=False, timeout=10)
    assert first.status_code == 303
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 401
    assert requests.post(f"{base}/signin", data={"key": "bm90IHRoZSBrZXk="},
                         allow_redirects=False, timeout=10).status_code == 401


def test_an_action_without_the_csrf_token_is_refused(env: Env) -> None:
    s = requests.Session()
    r = s.post(f"{env.endpoint}/dashboard/signin", data={"key": env.key}, allow_redirects=False,
               timeout=10)
    assert r.status_code == 303
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    csrf = s.get(f"{env.endpoint}/dashboard/api/session", timeout=10).json()["csrf"]
    action = f"{env.endpoint}/dashboard/api/actions/resizePool"
    body = {"poolId": "heat", "targetDedicatedNodes": 0}
    assert s.post(action, json=body, timeout=10).status_code == 403  # forged: no token
    assert s.post(action, json=body, headers={"X-CSRF-Token": "guess"},
                  timeout=10).status_code == 403
    assert s.post(action, json=body, headers={"X-CSRF-Token": csrf,
                                              "Origin": "http://evil.example"},
                  timeout=10).status_code == 403
    assert env.client.get_pool("heat").target_dedicated_nodes == 3
    # With it, a refused operation answers the core's error and is audited.
    r = s.post(f"{env.endpoint}/dashboard/api/actions/terminateTask",
               json={"jobId": "nosuchjob", "taskId": "t"}, headers={"X-CSRF-Token": csrf},
               timeout=10)
    assert r.status_code == 404 and r.json()["code"] == "JobNotFound"
    audit = _events(env, ACTION_EVENT)[-1]["body"]
    assert audit["action"] == "terminateTask" and audit["outcome"] == "JobNotFound"
    assert audit["signedInWith"] == "key"


def test_sign_in_with_a_token_link_and_with_the_key(env: Env, browser: Any) -> None:
    page = signed_in_page(browser, env)
    page.wait_for_selector('section.pool[data-pool="heat"]')
    headers = page.request.get(f"{env.endpoint}/dashboard/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert page.get_attribute("#dask-link", "href") == DASK_URL
    assert page.is_visible("#dask-link")
    page.context.close()

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{env.endpoint}/dashboard/")
    page.wait_for_url(f"{env.endpoint}/dashboard/signin")
    page.fill("#key", "wrong")
    page.click("#signin")
    page.wait_for_selector("p.error")
    page.fill("#key", env.key)
    page.click("#signin")
    page.wait_for_url(f"{env.endpoint}/dashboard/")
    page.wait_for_selector('section.pool[data-pool="heat"]')
    context.close()


# -------------------------------------------------------------------- pools


def test_heat_map_shows_every_state_a_failing_node_passes_through(env: Env, browser: Any) -> None:
    page = signed_in_page(browser, env)
    page.wait_for_function(
        "() => document.querySelectorAll('section.pool[data-pool=\"heat\"] .cell').length === 3")
    cells = _cells(page, "heat")
    assert sorted(c["id"] for c in cells) == sorted(n.id for n in env.client.list_nodes("heat"))
    assert {(c["state"], c["colour"]) for c in cells} == {("idle", COLOURS["idle"])}
    assert "3 / target 3" in page.inner_text('section.pool[data-pool="heat"] .facts')

    victim = cells[1]["id"]
    server_seen: list[str] = []

    def listener(n):
        if n.node_id == victim:
            server_seen.append(n.state)

    env.service.pool_manager.state_listeners.append(listener)
    env.service.pool_manager.health.auto_recover = False  # rebooted from the page, not by itself
    page.evaluate("""victim => {
        window.__seen = [];
        const cell = document.querySelector(`.cell[data-node="${victim}"]`);
        new MutationObserver(() => {
            const st = cell.dataset.state;
            if (window.__seen[window.__seen.length - 1] !== st) window.__seen.push(st);
        }).observe(cell, {attributes: true, attributeFilter: ["data-state"]});
    }""", victim)
    try:
        pid = int(Path(env.bed.host(victim).root_dir, "node.pid").read_text())
        os.kill(pid, signal.SIGKILL)  # the node's agent (its Dask worker) dies
        page.wait_for_function(f"() => document.querySelector('.cell[data-node=\"{victim}\"]')"
                               "?.dataset.state === 'unusable'", timeout=60_000)
        assert _cells(page, "heat")[1]["colour"] == COLOURS["unusable"]
        # Reboot it from its node page, in a second tab: the first keeps watching.
        other = page.context.new_page()
        other.goto(f"{env.endpoint}/dashboard/#/pools/heat/nodes/{victim}")
        other.wait_for_selector("#node-info")
        assert "NodeLost" in other.inner_text("#node-info")
        other.click("button.reboot")
        other.click("#confirm-ok")
        page.wait_for_function(f"() => document.querySelector('.cell[data-node=\"{victim}\"]')"
                               "?.dataset.state === 'idle'", timeout=120_000)
        wait_until(lambda: server_seen and server_seen[-1] == "idle", what="idle on the server")
    finally:
        env.service.pool_manager.state_listeners.remove(listener)
        env.service.pool_manager.health.auto_recover = True
    seen = page.evaluate("window.__seen")
    assert seen == server_seen, (seen, server_seen)
    assert seen[0] == "unusable" and "rebooting" in seen and "starting" in seen
    assert {c["colour"] for c in _cells(page, "heat")} == {COLOURS["idle"]}
    audit = [e["body"] for e in _events(env, ACTION_EVENT) if e["body"]["action"] == "rebootNode"]
    assert audit[-1]["nodeId"] == victim and audit[-1]["outcome"] == "accepted"
    page.context.close()


# --------------------------------------------------------------------- jobs


def test_a_job_of_200_tasks_reaches_completion_live(env: Env, browser: Any) -> None:
    client = env.client
    client.create_job({"id": "j200", "poolInfo": {"poolId": "heat"}})
    page = signed_in_page(browser, env)
    page.goto(f"{env.endpoint}/dashboard/#/jobs/j200")
    page.wait_for_selector("#job-counts")
    page.evaluate("""() => {
        window.__completed = []; window.__marker = "same page";
        const box = document.getElementById("job-counts").parentElement;
        new MutationObserver(() => {
            const el = box.querySelector('[data-count="completed"]');
            const v = Number(el && el.textContent);
            if (window.__completed[window.__completed.length - 1] !== v) window.__completed.push(v);
        }).observe(box, {childList: true, subtree: true, characterData: true});
    }""")
    tasks = [{"id": f"t{i:03d}", "commandLine": "/bin/sleep 0.3"} for i in range(190)]
    tasks += [{"id": f"f{i:03d}", "commandLine": "/bin/sh -c 'sleep 0.3; exit 3'"}
              for i in range(10)]
    client.create_tasks("j200", tasks)
    pools = page.context.new_page()  # the heat map with running tasks, for the README
    pools.goto(f"{env.endpoint}/dashboard/#/pools")
    pools.wait_for_function("() => [...document.querySelectorAll('.cell')].some("
                            "c => c.dataset.state === 'running')", timeout=60_000)
    pools.screenshot(path=str(DOCS / "dashboard-pools.png"), full_page=True)
    pools.close()
    page.wait_for_function("() => document.querySelector('[data-count=\"completed\"]')"
                           "?.textContent === '200'", timeout=180_000)
    counts = {k: page.inner_text(f'#job-counts [data-count="{k}"]')
              for k in ("active", "running", "completed", "succeeded", "failed")}
    assert counts == {"active": "0", "running": "0", "completed": "200", "succeeded": "190",
                      "failed": "10"}
    seen = page.evaluate("window.__completed")
    assert page.evaluate("window.__marker") == "same page"  # no reload
    assert seen == sorted(seen) and seen[-1] == 200 and len(seen) >= 4, seen
    # Charts drawn from the store's aggregates; the task table filtered through OData.
    page.wait_for_selector('#job-charts [data-chart="Running tasks"][data-last="0"] polyline')
    page.wait_for_selector("#tasks-table")
    page.fill("#task-exit", "3")
    page.click("#apply-filter")
    page.wait_for_function("() => document.querySelectorAll('#tasks-table tr[data-task]').length === 10")
    ids = page.eval_on_selector_all("#tasks-table tr[data-task]", "r => r.map(x => x.dataset.task)")
    assert ids == [f"f{i:03d}" for i in range(10)]
    # Task - Add Collection sent its two chunks of 100 in parallel: which landed first, so
    # the list's order (and the table's pages), is the service's to say.
    listed = [t["id"] for t in client.list_tasks_json("j200", "state eq 'completed'", "id")]
    page.fill("#task-exit", "")
    page.select_option("#task-state", "completed")
    page.click("#apply-filter")
    page.wait_for_function("() => document.querySelectorAll('#tasks-table tr[data-task]').length === 50")
    assert page.eval_on_selector_all("#tasks-table tr[data-task]",
                                     "r => r.map(x => x.dataset.task)") == listed[:50]
    page.click("text=Next")
    page.wait_for_selector('#tasks-table[data-page="2"]')
    assert page.eval_on_selector_all("#tasks-table tr[data-task]",
                                     "r => r.map(x => x.dataset.task)") == listed[50:100]
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(DOCS / "dashboard-job.png"))  # the viewport: counts, charts, tasks
    # The jobs list shows the same counts.
    page.goto(f"{env.endpoint}/dashboard/#/jobs")
    page.wait_for_selector('#jobs-table tr[data-job="j200"] [data-count="failed"]')
    assert page.inner_text('#jobs-table tr[data-job="j200"] [data-count="failed"]') == "10"
    page.context.close()


def test_a_live_refresh_keeps_the_applied_filter_and_page_of_the_task_table(
        env: Env, browser: Any) -> None:
    """A refresh redraws the page the table shows: the filter as applied, not as being
    edited, and that filter's continuation (it once mixed the edited filter with the
    applied one's token, and a Next drawn before Filter paged from a token not known yet)."""
    client = env.client
    client.create_job({"id": "pager", "poolInfo": {"poolId": "heat"}})
    client.create_tasks("pager", [{"id": f"p{i:03d}", "commandLine": "/bin/true"}
                                  for i in range(60)])
    wait_until(lambda: client.get_task_counts("pager")["completed"] == 60, timeout_s=120,
               what="60 completed")
    page = signed_in_page(browser, env)
    page.goto(f"{env.endpoint}/dashboard/#/jobs/pager")
    page.wait_for_selector("#tasks-table")
    page.select_option("#task-state", "completed")
    page.click("#apply-filter")
    page.click("text=Next")  # enabled only once the filtered first page is drawn
    page.wait_for_selector('#tasks-table[data-page="2"]')
    rows = "r => r.map(x => x.dataset.task)"
    assert page.eval_on_selector_all("#tasks-table tr[data-task]", rows) == \
        [f"p{i:03d}" for i in range(50, 60)]
    # Edited, not applied: the next refresh (the counts move as a new task runs) keeps page 2
    # of "completed", which the new task joins once it has completed.
    page.fill("#task-exit", "3")
    page.select_option("#task-state", "active")
    client.create_task("pager", {"id": "p060", "commandLine": "/bin/true"})
    page.wait_for_selector('#tasks-table tr[data-task="p060"][data-state="completed"]',
                           timeout=60_000)
    assert page.get_attribute("#tasks-table", "data-page") == "2"
    assert page.eval_on_selector_all("#tasks-table tr[data-task]", rows) == \
        [f"p{i:03d}" for i in range(50, 61)]
    page.click("text=Previous")
    page.wait_for_selector('#tasks-table[data-page="1"]')
    assert page.eval_on_selector_all("#tasks-table tr[data-task]", rows) == \
        [f"p{i:03d}" for i in range(50)]
    page.context.close()


# --------------------------------------------------------------------- tasks


def test_stdout_tail_grows_and_terminate_ends_the_task(env: Env, browser: Any) -> None:
    client = env.client
    client.create_job({"id": "tail", "poolInfo": {"poolId": "heat"}})
    client.create_task("tail", {"id": "talker", "commandLine":
                                "/bin/sh -c 'i=0; while true; do i=$((i+1)); echo line $i; "
                                "sleep 0.2; done'"})
    wait_until(lambda: client.get_task("tail", "talker").state == "running", what="running")
    page = signed_in_page(browser, env)
    page.goto(f"{env.endpoint}/dashboard/#/jobs/tail/tasks/talker")
    page.wait_for_function("() => document.getElementById('tail-stdout')?.textContent.includes('line 3\\n')",
                           timeout=30_000)
    first = len(page.inner_text("#tail-stdout"))
    page.wait_for_function(
        f"() => document.getElementById('tail-stdout')?.textContent.length > {first} + 40",
        timeout=30_000)
    lines = page.inner_text("#tail-stdout").split("\n")
    numbers = [int(x.split()[1]) for x in lines if x.startswith("line ")]
    assert numbers == list(range(1, len(numbers) + 1))  # in order, none lost or repeated
    page.click("button.terminate-task")
    page.click("#confirm-ok")
    page.wait_for_function("() => document.querySelector('#task-state-badge')?.textContent === "
                           "'completed'", timeout=30_000)
    task = client.get_task("tail", "talker")
    assert task.state == "completed"
    assert task.execution_info.failure_info.code == "TaskEnded"
    page.wait_for_function("() => document.querySelector('.tail-state')?.textContent.startsWith('ended')",
                           timeout=30_000)
    audit = [e["body"] for e in _events(env, ACTION_EVENT)
             if e["body"]["action"] == "terminateTask" and e["body"].get("jobId") == "tail"]
    assert audit and audit[-1]["outcome"] == "accepted" and audit[-1]["signedInWith"] == "token"
    # The events page filters by job and name.
    page.goto(f"{env.endpoint}/dashboard/#/events?job=tail&name={ACTION_EVENT}")
    page.wait_for_selector(f'#events-table tr[data-event="{ACTION_EVENT}"]')
    names = page.eval_on_selector_all("#events-table tbody tr", "r => r.map(x => x.dataset.event)")
    assert names and set(names) == {ACTION_EVENT}
    page.context.close()


def _running_ticker(client: Any, job_id: str, task_id: str) -> None:
    """A job on pool ``heat`` whose one task prints ``tick`` every 0.2 s until it is
    ended; return once it runs."""
    client.create_job({"id": job_id, "poolInfo": {"poolId": "heat"}})
    client.create_task(job_id, {"id": task_id, "commandLine":
                                "/bin/sh -c 'while true; do echo tick; sleep 0.2; done'"})
    wait_until(lambda: client.get_task(job_id, task_id).state == "running", what="running")


def test_overlapping_routings_leave_one_view_and_its_streams(env: Env, browser: Any) -> None:
    """Two routings of one address may overlap: a hashchange queued while start() awaited
    the session fires the listener it then added, besides start()'s own routing. Only the
    latest view draws and opens streams; with both task views' six event streams open
    (Chromium's HTTP/1.1 connections per host), terminate's POST waited forever."""
    client = env.client
    _running_ticker(client, "race", "spin")
    page = signed_in_page(browser, env)
    page.goto(f"{env.endpoint}/dashboard/#/jobs/race/tasks/spin")
    page.wait_for_selector("#task-state-badge")
    page.evaluate("""() => {
        window.__old = document.getElementById("task-info");
        window.__streams = [];  // the event streams opened from now on
        const Native = window.EventSource;
        window.EventSource = class extends Native {
            constructor(...args) { super(...args); window.__streams.push(this); }
        };
        for (let i = 0; i < 2; i++) window.dispatchEvent(new HashChangeEvent("hashchange"));
    }""")
    page.wait_for_function("() => document.getElementById('task-info') !== window.__old"
                           " && document.getElementById('tail-stdout')?.textContent.includes('tick')",
                           timeout=30_000)
    # The task and its stdout and stderr: one view's one stream, open.
    assert page.evaluate("window.__streams.map(e => e.readyState !== EventSource.CLOSED)") \
        == [True]
    page.click("button.terminate-task")
    page.click("#confirm-ok")
    page.wait_for_function("() => document.querySelector('#task-state-badge')?.textContent === "
                           "'completed'", timeout=30_000)
    assert client.get_task("race", "spin").execution_info.failure_info.code == "TaskEnded"
    page.context.close()


def test_four_task_tabs_leave_connections_for_actions(env: Env, browser: Any) -> None:
    """A task page holds one event stream (its task and both tails): four task tabs of one
    browser take four of Chromium's six HTTP/1.1 connections to the service, and an
    action from any of them still goes out (with three streams a page, two tabs took all
    six and every request after them waited)."""
    client = env.client
    _running_ticker(client, "tabs", "talk")
    first = signed_in_page(browser, env)
    pages = [first, *(first.context.new_page() for _ in range(3))]
    for page in pages:
        page.goto(f"{env.endpoint}/dashboard/#/jobs/tabs/tasks/talk")
        page.wait_for_function("() => document.getElementById('tail-stdout')?.textContent"
                               ".includes('tick')", timeout=30_000)
    last = pages[-1]
    last.click("button.terminate-task")
    last.click("#confirm-ok")
    for page in pages:  # every tab's stream sees the end
        page.wait_for_function("() => document.querySelector('#task-state-badge')?.textContent"
                               " === 'completed'", timeout=30_000)
    assert client.get_task("tabs", "talk").execution_info.failure_info.code == "TaskEnded"
    first.context.close()


def test_dashboard_sends_pages_not_whole_lists(env: Env) -> None:
    s = requests.Session()
    s.post(f"{env.endpoint}/dashboard/signin", data={"key": env.key}, timeout=10)
    page = s.get(f"{env.endpoint}/dashboard/api/jobs/j200/tasks", timeout=10).json()
    assert len(page["tasks"]) == 50 and page["next"] is not None
    nxt = s.get(f"{env.endpoint}/dashboard/api/jobs/j200/tasks",
                params={"after": page["next"]}, timeout=10).json()
    assert {t["id"] for t in nxt["tasks"]}.isdisjoint(t["id"] for t in page["tasks"])
    bad = s.get(f"{env.endpoint}/dashboard/api/jobs/j200/tasks",
                params={"filter": "nonsense eq 1"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidQueryParameterValue"
    detail = s.get(f"{env.endpoint}/dashboard/api/jobs/j200", timeout=10).json()
    assert detail["counts"]["completed"] == 200
    assert len(detail["series"]["running"]) == 60
    assert sum(detail["series"]["completedPerSecond"]) * detail["series"]["bucketSeconds"] \
        == pytest.approx(200, rel=0.01)
    assert json.dumps(detail).count('"id"') < 20  # no task list in the job's page



def test_the_dashboard_command_prints_a_link_that_signs_in_once(env: Env) -> None:
    from click.testing import CliRunner

    from hpcbatch.client.cli import cli

    state_dir = env.thread.runtime.state_dir
    result = CliRunner().invoke(cli, ["--state-dir", str(state_dir), "dashboard", "-o", "json"])
    assert result.exit_code == 0, result.output
    url = json.loads(result.output)["url"]
    assert url.startswith(f"{env.endpoint}/dashboard/signin?token=")
    s = requests.Session()
    assert s.get(url, allow_redirects=False, timeout=10).status_code == 303
    assert s.get(f"{env.endpoint}/dashboard/api/pools", timeout=10).json()[0]["id"] == "heat"
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 401  # spent
