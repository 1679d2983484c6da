// hpcbatch dashboard: plain JavaScript, no build step, no library, nothing from the internet.
// Views are chosen by the URL's # part; data comes from /dashboard/api/* (JSON) and live
// updates from /dashboard/live/* (server-sent events). Text is always set with textContent.
"use strict";

const NODE_STATES = ["creating", "starting", "waitingforstarttask", "starttaskfailed", "idle",
  "running", "rebooting", "reimaging", "leavingpool", "offline", "unusable", "unknown", "preempted"];
const TASK_STATES = ["active", "preparing", "running", "completed"];
let session = null;       // {csrf, how, account, daskDashboardUrl}
let cleanups = [];        // closers of the current view's streams and timers
let routeSeq = 0;         // the latest routing; an older one that resumes draws and opens nothing

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") el.style.cssText = v;   // CSSOM: allowed under the page's CSP
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// Replace an element's children (arrays flattened, null and false left out).
function fill(el, ...children) {
  el.replaceChildren(...children.flat(2).filter(c => c !== null && c !== undefined && c !== false));
  return el;
}
const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const enc = encodeURIComponent;
function badge(text) { return h("span", {class: `badge ${text || ""}`}, text ?? "-"); }
function fmtTime(t) { return t ? String(t).replace("T", " ").replace(/\.\d+Z$/, "Z") : "-"; }
function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function kv(rows) {
  return h("table", {class: "kv"}, rows.filter(r => r).map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, v instanceof Node ? v : (v ?? "-")))));
}
function toast(text, isError) {
  const t = document.getElementById("toast");
  t.textContent = text; t.className = isError ? "error" : ""; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}
function signIn() { window.location.assign("/dashboard/signin"); }

async function api(path) {
  const r = await fetch(`/dashboard/api/${path}`, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (r.status === 401) { signIn(); throw new Error("signed out"); }
  const data = await r.json();
  if (!r.ok) throw new Error(errorText(data));
  return data;
}
function errorText(data) {
  const m = data && data.message;
  return `${data.code || "Error"}: ${(m && m.value ? m.value : m || "").split("\nRequestId:")[0]}`;
}

// Ask in the page, then POST the action with the session's CSRF token.
function confirmAction(text) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise(resolve => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), {once: true});
    dlg.returnValue = "";
    dlg.showModal();
  });
}
async function act(name, body, text) {
  if (!await confirmAction(text)) return false;
  const r = await fetch(`/dashboard/api/actions/${name}`, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf},
    body: JSON.stringify(body)});
  if (r.status === 401) { signIn(); return false; }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { toast(errorText(data), true); return false; }
  toast(`${name}: accepted`);
  return true;
}

// A server-sent event stream owned by the current view.
function stream(path, handlers) {
  const es = new EventSource(`/dashboard/live/${path}`);
  const status = document.getElementById("live-status");
  es.onopen = () => { status.textContent = "live"; status.classList.add("on"); };
  es.onerror = () => { status.textContent = "reconnecting"; status.classList.remove("on"); };
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, ev => fn(JSON.parse(ev.data)));
  }
  cleanups.push(() => es.close());
  return es;
}

// A line chart of equally spaced values, drawn as inline SVG.
function lineChart(title, values, {width = 460, height = 150, unit = "", seconds = 0} = {}) {
  const pad = {l: 44, r: 8, t: 8, b: 20};
  const w = width - pad.l - pad.r, hh = height - pad.t - pad.b;
  const max = Math.max(1e-9, ...values.map(v => v ?? 0));
  const svg = s("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title});
  svg.append(s("line", {x1: pad.l, y1: pad.t + hh, x2: pad.l + w, y2: pad.t + hh, stroke: "#c9d1db"}));
  svg.append(s("line", {x1: pad.l, y1: pad.t, x2: pad.l, y2: pad.t + hh, stroke: "#c9d1db"}));
  svg.append(s("text", {x: pad.l - 4, y: pad.t + 8, "text-anchor": "end"}, fmtNum(max) + unit));
  svg.append(s("text", {x: pad.l - 4, y: pad.t + hh, "text-anchor": "end"}, "0"));
  if (seconds) svg.append(s("text", {x: pad.l + w, y: height - 4, "text-anchor": "end"}, `${fmtNum(seconds)} s`));
  const pts = values.map((v, i) => [pad.l + (values.length > 1 ? i * w / (values.length - 1) : 0),
    pad.t + hh - ((v ?? 0) / max) * hh]);
  if (pts.length) {
    const d = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    svg.append(s("polygon", {points: `${pad.l},${pad.t + hh} ${d} ${pts[pts.length - 1][0].toFixed(1)},${pad.t + hh}`, fill: "#1e88e533"}));
    svg.append(s("polyline", {points: d, fill: "none", stroke: "#1e88e5", "stroke-width": 2}));
  }
  return h("div", {class: "chart", dataset: {chart: title, last: String(values.length ? values[values.length - 1] : "")}},
    h("div", {class: "title"}, title), svg);
}
function fmtNum(v) { return v >= 100 ? Math.round(v).toString() : (+v.toFixed(2)).toString(); }

function progressBar(c) {
  const total = (c.active || 0) + (c.running || 0) + (c.completed || 0);
  const pct = n => total ? `${(100 * n / total).toFixed(2)}%` : "0%";
  return h("div", {class: "progress", title: `${c.completed || 0} of ${total} completed`,
                   role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": c.completed || 0},
    h("span", {class: "ok", style: `width:${pct(c.succeeded || 0)}`}),
    h("span", {class: "bad", style: `width:${pct(c.failed || 0)}`}),
    h("span", {class: "run", style: `width:${pct(c.running || 0)}`}));
}

// ------------------------------------------------------------------ pools

function legend() {
  return h("div", {class: "legend"}, NODE_STATES.map(st => h("span", {style: `--c: var(--${st})`}, st)));
}
function nodeCell(pool, [id, state, running, error]) {
  const cell = h("a", {class: "cell", href: `#/pools/${enc(pool)}/nodes/${enc(id)}`,
    title: `${id}: ${state}${running ? `, ${running} running task(s)` : ""}${error ? ` (${error})` : ""}`,
    dataset: {node: id, state, running: String(running)}}, running ? String(running) : "");
  return cell;
}
function setCell(cell, [id, state, running, error]) {
  cell.dataset.state = state; cell.dataset.running = String(running);
  cell.textContent = running ? String(running) : "";
  cell.title = `${id}: ${state}${running ? `, ${running} running task(s)` : ""}${error ? ` (${error})` : ""}`;
}
function autoscaleText(p) {
  if (!p.enableAutoScale) return "off";
  const run = p.autoScaleRun;
  return run ? `on; last run ${fmtTime(run.timestamp)}${run.error ? ` (error: ${run.error.code})` : ""}` : "on; not run yet";
}
function poolCard(p) {
  const card = h("section", {class: "card pool", dataset: {pool: p.id}},
    h("div", {class: "pool-head"}), legend(), h("div", {class: "heatmap", role: "list"}), h("div", {class: "actions"}));
  fillPoolCard(card, p);
  return card;
}
// Update a card: its summary and actions are redrawn, its cells changed in place (so a cell
// keeps its element while its node lives; actions are left alone while being edited).
function fillPoolCard(card, p) {
  const counts = Object.entries(p.stateCounts || {}).map(([k, v]) => `${v} ${k}`).join(", ");
  card.querySelector(".pool-head").replaceChildren(
    h("h2", {}, h("span", {}, `Pool ${p.id} `), badge(p.state), " ", badge(p.allocationState)),
    h("div", {class: "facts"},
      h("span", {}, "nodes ", h("b", {class: "current"}, p.currentDedicatedNodes ?? 0), " / target ",
        h("b", {class: "target"}, p.targetDedicatedNodes ?? 0)),
      h("span", {}, "vmSize ", h("b", {}, p.vmSize || "-")),
      h("span", {}, "slots/node ", h("b", {}, p.taskSlotsPerNode ?? 1)),
      h("span", {}, "autoscale ", h("b", {class: "autoscale"}, autoscaleText(p))),
      h("span", {class: "state-counts"}, counts)),
    p.enableAutoScale ? h("div", {class: "muted"}, h("code", {}, p.autoScaleFormula || "")) : "");
  const map = card.querySelector(".heatmap");
  const cells = [...map.children];
  const nodes = p.nodes || [];
  if (cells.length === nodes.length && cells.every((c, i) => c.dataset.node === nodes[i][0])) {
    nodes.forEach((n, i) => { if (cells[i].dataset.state !== n[1] || cells[i].dataset.running !== String(n[2])) setCell(cells[i], n); });
  } else {
    map.replaceChildren(...nodes.map(c => nodeCell(p.id, c)));
  }
  const actions = card.querySelector(".actions");
  if (actions.contains(document.activeElement) && actions.dataset.autoscale === String(!!p.enableAutoScale)) return;
  actions.dataset.autoscale = String(!!p.enableAutoScale);
  const target = h("input", {type: "number", min: 0, value: p.targetDedicatedNodes ?? 0, style: "width:70px",
    "aria-label": "target dedicated nodes", class: "resize-target"});
  const formula = h("textarea", {rows: 2, cols: 50, class: "formula", "aria-label": "autoscale formula"},
    p.autoScaleFormula || "$TargetDedicatedNodes = 1;");
  actions.replaceChildren(
    ...(p.enableAutoScale
      ? [h("button", {type: "button", class: "disable-autoscale", onclick: () =>
          act("disableAutoScale", {poolId: p.id}, `Disable autoscale on pool ${p.id}?`)}, "Disable autoscale")]
      : [target, h("button", {type: "button", class: "resize", onclick: () =>
          act("resizePool", {poolId: p.id, targetDedicatedNodes: Number(target.value)},
              `Resize pool ${p.id} to ${target.value} dedicated node(s)?`)}, "Resize"),
         formula, h("button", {type: "button", class: "enable-autoscale", onclick: () =>
          act("enableAutoScale", {poolId: p.id, autoScaleFormula: formula.value, autoScaleEvaluationInterval: "PT5M"},
              `Enable autoscale on pool ${p.id} with this formula?`)}, "Enable autoscale")]));
}
function viewPools(main) {
  fill(main, h("h1", {}, "Pools"), h("div", {id: "pools"}, h("p", {class: "muted"}, "Loading...")));
  const box = main.querySelector("#pools");
  const cards = new Map();
  const render = list => {
    cards.clear();
    box.replaceChildren(...(list.length ? list.map(p => { const c = poolCard(p); cards.set(p.id, {card: c, pool: p}); return c; })
      : [h("p", {class: "muted"}, "No pools.")]));
  };
  stream("pools", {
    snapshot: render,
    node: ([pool, id, state, running, error]) => {
      const entry = cards.get(pool);
      const cell = entry && entry.card.querySelector(`.cell[data-node="${CSS.escape(id)}"]`);
      if (cell) setCell(cell, [id, state, running, error]);
      if (entry) entry.pool.nodes = entry.pool.nodes.map(c => c[0] === id ? [id, state, running, error] : c);
    },
    pools: ({pools, gone}) => {
      for (const p of pools) {
        const entry = cards.get(p.id);
        if (!entry || p.nodes) {
          const pool = p.nodes ? p : {...entry.pool, ...p};
          if (entry) { fillPoolCard(entry.card, pool); entry.pool = pool; }
          else { const c = poolCard(pool); box.querySelector("p.muted")?.remove(); box.append(c); cards.set(p.id, {card: c, pool}); }
          continue;
        }
        const cellsById = new Map(entry.pool.nodes.map(c => [c[0], c]));
        for (const c of p.changedNodes || []) cellsById.set(c[0], c);
        const pool = {...entry.pool, ...p, nodes: entry.pool.nodes.map(c => cellsById.get(c[0]))};
        delete pool.changedNodes;
        const summaryChanged = Object.keys(p).some(k => k !== "changedNodes" && JSON.stringify(p[k]) !== JSON.stringify(entry.pool[k]));
        entry.pool = pool;
        if (summaryChanged) fillPoolCard(entry.card, pool);
        for (const c of p.changedNodes || []) {
          const cell = entry.card.querySelector(`.cell[data-node="${CSS.escape(c[0])}"]`);
          if (cell && (cell.dataset.state !== c[1] || cell.dataset.running !== String(c[2]))) setCell(cell, c);
        }
      }
      for (const id of gone || []) { cards.get(id)?.card.remove(); cards.delete(id); }
    },
  });
}

// ------------------------------------------------------------------ node

async function viewNode(main, poolId, nodeId, path, current) {
  const d = await api(`pools/${enc(poolId)}/nodes/${enc(nodeId)}?path=${enc(path || "")}`);
  if (!current()) return;
  const info = h("div", {id: "node-info"});
  const cpu = [], mem = [];
  const charts = h("div", {class: "charts", id: "node-metrics"});
  const drawMetrics = () => charts.replaceChildren(
    lineChart("CPU %", cpu, {unit: "%"}), lineChart("Memory used (GiB)", mem.map(v => v / 2 ** 30)));
  const renderNode = n => {
    const st = n.startTaskInfo || {};
    info.replaceChildren(kv([
      ["State", badge(n.state)], ["Scheduling", n.schedulingState], ["IP address", n.ipAddress],
      ["Running tasks", String(n.runningTasksCount ?? 0)], ["Tasks run / succeeded", `${n.totalTasksRun} / ${n.totalTasksSucceeded}`],
      ["State since", fmtTime(n.stateTransitionTime)], ["Allocated", fmtTime(n.allocationTime)], ["Last boot", fmtTime(n.lastBootTime)],
      ["Start task", n.startTaskInfo ? `${st.state || "-"}, exit code ${st.exitCode ?? "-"}, retries ${st.retryCount ?? 0}${st.failureInfo ? `, ${st.failureInfo.code}: ${st.failureInfo.message}` : ""}` : "none"],
      ["Errors", (n.errors || []).map(e => `${e.code}: ${e.message}`).join("; ") || "none"],
    ]));
  };
  const files = Array.isArray(d.files)
    ? h("table", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Size"), h("th", {}, "Modified")),
        d.files.map(f => h("tr", {}, h("td", {}, f.isDirectory
          ? h("a", {href: `#/pools/${enc(poolId)}/nodes/${enc(nodeId)}?path=${enc(f.name)}`}, `${f.name}/`) : f.name),
          h("td", {}, f.isDirectory ? "" : fmtBytes(f.properties?.contentLength)), h("td", {}, fmtTime(f.properties?.lastModified)))))
    : h("p", {class: "muted"}, d.files);
  fill(main, 
    h("h1", {}, h("a", {href: "#/pools"}, "Pools"), ` / ${poolId} / node ${nodeId}`),
    h("div", {class: "actions"},
      h("button", {type: "button", class: "reboot", onclick: () => act("rebootNode", {poolId, nodeId}, `Reboot node ${nodeId}? Its running tasks are requeued.`)}, "Reboot"),
      h("button", {type: "button", class: "remove danger", onclick: () => act("removeNode", {poolId, nodeId}, `Remove node ${nodeId} from pool ${poolId}? Its running tasks are requeued.`)}, "Remove from pool")),
    info,
    h("h2", {}, "CPU and memory (sampled live while this page is open)"), charts,
    h("h2", {}, "Recent tasks"),
    d.recentTasks.length ? h("table", {}, h("tr", {}, ["Job", "Task", "State", "Exit code", "Start", "End"].map(x => h("th", {}, x))),
      d.recentTasks.map(t => h("tr", {}, h("td", {}, h("a", {href: `#/jobs/${enc(t.jobId)}`}, t.jobId)),
        h("td", {}, h("a", {href: `#/jobs/${enc(t.jobId)}/tasks/${enc(t.taskId)}`}, t.taskId)),
        h("td", {}, badge(t.state)), h("td", {}, t.exitCode ?? "-"), h("td", {}, fmtTime(t.startTime)), h("td", {}, fmtTime(t.endTime)))))
      : h("p", {class: "muted"}, "No task has run here."),
    h("h2", {}, `Files${d.path ? ` in ${d.path}` : ""}`), files);
  renderNode(d.node); drawMetrics();
  stream(`nodes/${enc(poolId)}/${enc(nodeId)}`, {
    node: renderNode,
    metrics: m => {
      if (m.cpuPercent === null || m.cpuPercent === undefined) return;
      cpu.push(m.cpuPercent); mem.push(m.memoryBytes); if (cpu.length > 120) { cpu.shift(); mem.shift(); }
      drawMetrics();
    },
  });
}

// ------------------------------------------------------------------ jobs

function jobsTable(list) {
  return h("table", {id: "jobs-table"},
    h("tr", {}, ["Job", "State", "Priority", "Pool", "Active", "Running", "Completed", "Succeeded", "Failed", "Progress"].map(x => h("th", {}, x))),
    list.map(j => h("tr", {dataset: {job: j.id}},
      h("td", {}, h("a", {href: `#/jobs/${enc(j.id)}`}, j.id)), h("td", {}, badge(j.state)), h("td", {}, j.priority),
      h("td", {}, j.poolId ? h("a", {href: "#/pools"}, j.poolId) : "-"),
      ["active", "running", "completed", "succeeded", "failed"].map(k => h("td", {dataset: {count: k}}, j.counts[k] ?? 0)),
      h("td", {}, progressBar(j.counts)))));
}
function viewJobs(main) {
  fill(main, h("h1", {}, "Jobs"), h("div", {id: "jobs"}, h("p", {class: "muted"}, "Loading...")));
  const box = main.querySelector("#jobs");
  stream("jobs", {jobs: page => box.replaceChildren(page.jobs.length ? jobsTable(page.jobs) : h("p", {class: "muted"}, "No jobs."),
    page.total > page.jobs.length ? h("p", {class: "muted"}, `Showing the newest ${page.jobs.length} of ${page.total} jobs.`) : "")});
}

function countsBox(counts) {
  return h("div", {class: "counts", id: "job-counts"},
    ["active", "running", "completed", "succeeded", "failed"].map(k =>
      h("div", {}, h("b", {dataset: {count: k}}, counts[k] ?? 0), k)));
}
function seriesCharts(sr) {
  if (!sr || !sr.running.length) return h("p", {class: "muted"}, "No task has started yet.");
  const secs = sr.bucketSeconds * sr.running.length;
  return [lineChart("Tasks completed per second", sr.completedPerSecond, {seconds: secs}),
          lineChart("Running tasks", sr.running, {seconds: secs})];
}

async function viewJob(main, jobId, current) {
  const d = await api(`jobs/${enc(jobId)}`);
  if (!current()) return;
  const job = d.job;
  const stateBadge = h("span", {id: "job-state"}, badge(job.state));
  const counts = h("div", {}, countsBox(d.counts));
  const progress = h("div", {id: "job-progress"}, progressBar(d.counts));
  const charts = h("div", {class: "charts", id: "job-charts"}, seriesCharts(d.series));
  const prep = d.preparationAndRelease || [];
  // The task table: "Task - List" with a $filter built from the controls, keyset-paged.
  const stateSel = h("select", {id: "task-state", "aria-label": "task state"}, h("option", {value: ""}, "any state"),
    TASK_STATES.map(st => h("option", {value: st}, st)));
  const exitBox = h("input", {id: "task-exit", type: "number", placeholder: "exit code", style: "width:100px", "aria-label": "exit code"});
  const freeBox = h("input", {id: "task-filter", placeholder: "or an OData $filter", size: 40, "aria-label": "OData filter"});
  const tableBox = h("div", {id: "tasks"});
  const pager = h("div", {class: "pager"});
  // A page of the table is a query: the $filter as applied (not as being edited), the
  // continuation tokens of the pages before it, and its index. "wanted" is the latest asked
  // for; a live refresh asks for it again. Only the latest request draws, and the buttons it
  // draws page from its own query, so an old or refreshed button can never mix one filter's
  // tokens with another filter, nor page from a token that is not known yet.
  let wanted = {filter: "", tokens: [null], index: 0}, shown = null, loadSeq = 0;
  const filterText = () => {
    if (freeBox.value.trim()) return freeBox.value.trim();
    const parts = [];
    if (stateSel.value) parts.push(`state eq '${stateSel.value}'`);
    if (exitBox.value !== "") parts.push(`executionInfo/exitCode eq ${parseInt(exitBox.value, 10)}`);
    return parts.join(" and ");
  };
  const loadTasks = async (query = wanted) => {
    const seq = ++loadSeq;
    wanted = query;
    if (query !== shown) {  // another page is coming: no paging from the one being replaced
      pager.querySelectorAll("button").forEach(b => { b.disabled = true; });
      tableBox.setAttribute("aria-busy", "true");
    }
    const {filter, tokens, index} = query, after = tokens[index];
    let page;
    try {
      page = await api(`jobs/${enc(jobId)}/tasks?filter=${enc(filter)}${after !== null ? `&after=${after}` : ""}`);
    } catch (e) {
      if (seq === loadSeq) { tableBox.removeAttribute("aria-busy"); tableBox.replaceChildren(h("p", {class: "error"}, e.message)); }
      return;
    }
    if (seq !== loadSeq) return;
    const drawn = {filter, tokens: [...tokens.slice(0, index + 1), page.next], index};
    wanted = shown = drawn;
    tableBox.removeAttribute("aria-busy");
    tableBox.replaceChildren(h("table", {id: "tasks-table", dataset: {page: String(index + 1)}},
      h("tr", {}, ["Task", "State", "Exit code", "Node", "Start", "End"].map(x => h("th", {}, x))),
      page.tasks.map(t => h("tr", {dataset: {task: t.id, state: t.state}},
        h("td", {}, h("a", {href: `#/jobs/${enc(jobId)}/tasks/${enc(t.id)}`}, t.id)), h("td", {}, badge(t.state)),
        h("td", {}, t.exitCode ?? "-"), h("td", {}, t.nodeId || "-"), h("td", {}, fmtTime(t.startTime)), h("td", {}, fmtTime(t.endTime))))));
    pager.replaceChildren(
      h("button", {type: "button", disabled: index === 0, onclick: () => loadTasks({...drawn, index: index - 1})}, "Previous"),
      h("span", {class: "muted"}, `page ${index + 1}`),
      h("button", {type: "button", disabled: page.next === null, onclick: () => loadTasks({...drawn, index: index + 1})}, "Next"));
  };
  const applyFilter = () => loadTasks({filter: filterText(), tokens: [null], index: 0});
  fill(main, 
    h("h1", {}, h("a", {href: "#/jobs"}, "Jobs"), ` / ${job.id} `, stateBadge),
    h("div", {class: "facts"},
      h("span", {}, "pool ", h("b", {}, job.poolInfo?.poolId || "-")), h("span", {}, "priority ", h("b", {}, job.priority ?? 0)),
      h("span", {}, "created ", h("b", {}, fmtTime(job.creationTime))),
      h("span", {}, "on all tasks complete ", h("b", {}, job.onAllTasksComplete || "noaction"))),
    h("div", {class: "actions"}, h("button", {type: "button", class: "terminate-job danger", onclick: () =>
      act("terminateJob", {jobId}, `Terminate job ${jobId}? Its running tasks are ended.`)}, "Terminate job")),
    counts, progress,
    h("h2", {}, "Job manager, preparation and release"),
    kv([["Job manager task", d.jobManager ? h("span", {}, h("a", {href: `#/jobs/${enc(jobId)}/tasks/${enc(d.jobManager.id)}`}, d.jobManager.id), " ", badge(d.jobManager.state)) : "none"],
        ["Job preparation task", job.jobPreparationTask ? `${prep.filter(p => p.jobPreparationTaskExecutionInfo?.state === "completed").length} of ${prep.length} node(s) completed` : "none"],
        ["Job release task", job.jobReleaseTask ? `${prep.filter(p => p.jobReleaseTaskExecutionInfo?.state === "completed").length} of ${prep.length} node(s) completed` : "none"]]),
    h("h2", {}, "Charts"), charts,
    h("h2", {}, "Tasks"),
    h("div", {class: "filters"}, stateSel, exitBox, freeBox, h("button", {type: "button", id: "apply-filter", onclick: applyFilter}, "Filter")),
    tableBox, pager);
  loadTasks();
  let lastReload = 0, pending = null;
  stream(`jobs/${enc(jobId)}`, {
    counts: c => {
      stateBadge.replaceChildren(badge(c.state));
      counts.replaceChildren(countsBox(c.counts));
      progress.replaceChildren(progressBar(c.counts));
      const wait = Math.max(0, 2000 - (Date.now() - lastReload));   // refresh the page of tasks, at most every 2 s
      if (!pending) pending = setTimeout(() => { pending = null; lastReload = Date.now(); loadTasks(); }, wait);
    },
    series: sr => charts.replaceChildren(...[seriesCharts(sr)].flat()),
  });
  cleanups.push(() => clearTimeout(pending));
}

// ------------------------------------------------------------------ task

async function viewTask(main, jobId, taskId, current) {
  const d = await api(`jobs/${enc(jobId)}/tasks/${enc(taskId)}`);
  if (!current()) return;
  const info = h("div", {id: "task-info"});
  const renderTask = t => {
    const ex = t.executionInfo || {};
    const fail = ex.failureInfo;
    const deps = t.dependsOn;
    info.replaceChildren(kv([
      ["State", h("span", {id: "task-state-badge"}, badge(t.state))], ["Previous state", t.previousState],
      ["Command line", h("code", {}, t.commandLine)],
      ["Node", t.nodeInfo ? h("a", {href: `#/pools/${enc(t.nodeInfo.poolId)}/nodes/${enc(t.nodeInfo.nodeId)}`}, `${t.nodeInfo.poolId} / ${t.nodeInfo.nodeId}`) : "-"],
      ["Start / end", `${fmtTime(ex.startTime)} / ${fmtTime(ex.endTime)}`],
      ["Exit code", h("span", {id: "task-exit-code"}, ex.exitCode ?? "-")], ["Result", ex.result],
      ["Retries / requeues", `${ex.retryCount ?? 0} / ${ex.requeueCount ?? 0}`],
      ["Failure", fail ? `${fail.category}: ${fail.code}: ${fail.message}` : "none"],
      ["Depends on", deps ? [...(deps.taskIds || []), ...(deps.taskIdRanges || []).map(r => `${r.start}..${r.end}`)].join(", ") : "none"],
      t.multiInstanceSettings ? ["Multi-instance", `${t.multiInstanceSettings.numberOfInstances} instances; coordination: ${t.multiInstanceSettings.coordinationCommandLine || "-"}`] : null,
      ["Constraints", JSON.stringify(t.constraints || {})],
    ]));
  };
  renderTask(d.task);
  // The task and both tails come on one stream (one of the browser's six connections):
  // the tails' events are named "stdout-append", "stderr-end", ...
  const handlers = {task: renderTask};
  const tails = ["stdout.txt", "stderr.txt"].map(name => {
    const feed = name.split(".")[0];
    const pre = h("pre", {class: "tail", id: `tail-${feed}`});
    const note = h("span", {class: "muted tail-state"}, "following");
    let follow = true;
    pre.addEventListener("scroll", () => { follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4; });
    Object.assign(handlers, {
      [`${feed}-skipped`]: x => pre.append(`[... first ${x.bytes} bytes not shown ...]\n`),
      [`${feed}-append`]: x => { pre.append(x.text); if (follow) pre.scrollTop = pre.scrollHeight; },
      [`${feed}-end`]: x => { note.textContent = `ended (task ${x.state})`; },
      [`${feed}-gone`]: x => { note.textContent = x.message; },
    });
    return h("div", {}, h("h2", {}, name, " ", note), pre);
  });
  const files = Array.isArray(d.files)
    ? h("ul", {}, d.files.map(f => h("li", {}, `${f.name}${f.isDirectory ? "/" : ` (${fmtBytes(f.properties?.contentLength)})`}`)))
    : h("p", {class: "muted"}, d.files);
  fill(main, 
    h("h1", {}, h("a", {href: "#/jobs"}, "Jobs"), " / ", h("a", {href: `#/jobs/${enc(jobId)}`}, jobId), ` / task ${taskId}`),
    h("div", {class: "actions"}, h("button", {type: "button", class: "terminate-task danger", onclick: () =>
      act("terminateTask", {jobId, taskId}, `Terminate task ${taskId}? Its process tree is killed.`)}, "Terminate task")),
    info,
    h("h2", {}, "State history"),
    h("table", {id: "task-history"}, d.history.map(x => h("tr", {}, h("td", {}, fmtTime(x.time)), h("td", {}, x.what), h("td", {}, x.detail)))),
    d.subtasks.length ? [h("h2", {}, "Subtasks"), h("table", {}, h("tr", {}, ["Id", "State", "Node", "Exit code"].map(x => h("th", {}, x))),
      d.subtasks.map(st => h("tr", {}, h("td", {}, st.id), h("td", {}, badge(st.state)), h("td", {}, st.nodeInfo?.nodeId || "-"), h("td", {}, st.exitCode ?? "-"))))] : null,
    tails,
    h("h2", {}, "Files on the node"), files,
    h("h2", {}, "File Conventions outputs"),
    d.outputs.length ? h("ul", {id: "outputs"}, d.outputs.map(o => h("li", {}, `${o.path} (${fmtBytes(o.sizeBytes)})`)))
      : h("p", {class: "muted"}, "None saved."));
  stream(`jobs/${enc(jobId)}/tasks/${enc(taskId)}`, handlers);
}

// ------------------------------------------------------------------ events

function viewEvents(main, query) {
  const params = new URLSearchParams(query || "");
  const inputs = ["pool", "job", "name"].map(k => h("input", {id: `event-${k}`, placeholder: k === "name" ? "event name" : `${k} id`, value: params.get(k) || ""}));
  const rows = h("tbody", {});
  const apply = () => {
    const q = new URLSearchParams();
    ["pool", "job", "name"].forEach((k, i) => { if (inputs[i].value.trim()) q.set(k, inputs[i].value.trim()); });
    window.location.hash = `#/events?${q}`;
  };
  fill(main, h("h1", {}, "Events"),
    h("div", {class: "filters"}, inputs, h("button", {type: "button", id: "apply-events", onclick: apply}, "Filter")),
    h("table", {id: "events-table"}, h("thead", {}, h("tr", {}, ["Time", "Event", "Pool", "Job", "Id", "Body"].map(x => h("th", {}, x)))), rows));
  stream(`events?${params}`, {events: list => {
    for (const e of list) {
      const b = e.body || {};
      rows.prepend(h("tr", {dataset: {event: e.name}}, h("td", {}, fmtTime(e.time)), h("td", {}, e.name), h("td", {}, b.poolId || ""),
        h("td", {}, b.jobId || ""), h("td", {}, b.id || b.taskId || ""), h("td", {class: "mono"}, JSON.stringify(b).slice(0, 300))));
    }
    while (rows.children.length > 500) rows.lastChild.remove();
  }});
}

// ------------------------------------------------------------------ router

// Show the view the URL's # part names. Routings can overlap (a hashchange queued before
// start() added its listener fires it too; a click while a view loads): a view that awaits
// its data checks current() first, so only the latest draws and opens its stream. Each
// open stream holds one of Chromium's six HTTP/1.1 connections to the service: streams
// left behind would make every later request (an action's POST) wait for one to end.
async function route() {
  const seq = ++routeSeq, current = () => seq === routeSeq;
  cleanups.forEach(f => f()); cleanups = [];
  const main = document.getElementById("view");
  const [path, query] = (window.location.hash.slice(1) || "/pools").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("current", a.dataset.nav === parts[0]));
  try {
    if (parts[0] === "pools" && parts[2] === "nodes" && parts[3]) await viewNode(main, parts[1], parts[3], new URLSearchParams(query || "").get("path"), current);
    else if (parts[0] === "jobs" && parts[2] === "tasks" && parts[3]) await viewTask(main, parts[1], parts[3], current);
    else if (parts[0] === "jobs" && parts[1]) await viewJob(main, parts[1], current);
    else if (parts[0] === "jobs") viewJobs(main);
    else if (parts[0] === "events") viewEvents(main, query);
    else viewPools(main);
  } catch (e) {
    if (current()) fill(main, h("p", {class: "error"}, e.message));
  }
}

async function start() {
  session = await api("session");
  if (session.daskDashboardUrl) {
    const a = document.getElementById("dask-link");
    a.href = session.daskDashboardUrl; a.hidden = false;
  }
  document.getElementById("signout").addEventListener("click", async () => {
    await fetch("/dashboard/signout", {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": session.csrf}});
    signIn();
  });
  window.addEventListener("hashchange", route);
  route();
}
document.addEventListener("DOMContentLoaded", start);
