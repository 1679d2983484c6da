"""Reports of campaign summaries: tables (text, Markdown, CSV, JSON) and plots (PNG, HTML).

Plots are drawn with matplotlib's Agg backend (no display, no network), one
PNG per benchmark figure and kind:

* ``*-size.png`` -- the figure against message size (a parameter or label
  whose name holds ``size`` or ``bytes``), log-2 x axis, one line per other
  varying parameter; latency and bandwidth curves;
* ``*-nodes.png`` -- the figure against node count, with ideal scaling from
  the smallest count (time ``t0 * n0 / n``, rates ``r0 * n / n0``);
* ``*-spread.png`` -- run-to-run spread: a box per parameter point over the
  repeats.

``report.html`` embeds every PNG (base64) and the table: one self-contained
file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcbatch.campaigns.model import lower_is_better
from hpcbatch.campaigns.stats import Comparison

__all__ = [
    "FORMATS",
    "comparison_rows",
    "plot_summary",
    "render",
    "table_rows",
    "write_html",
]

FORMATS = ("table", "markdown", "csv", "json")
"""Table formats of :func:`render`."""

MAX_SPREAD_BOXES = 40
"""Most parameter points one spread plot shows."""


def _where(params: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in {**params, **labels}.items())


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def table_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per group of a summary, with its reference verdict, then the insane runs.

    Parameters
    ----------
    summary
        A campaign summary (:func:`hpcbatch.campaigns.results.make_summary`).

    Returns
    -------
    list of dict
        Keys ``benchmark``, ``point``, ``figure``, ``n``, ``mean``, ``stdev``,
        ``min``, ``max``, ``unit``, ``reference``, ``status`` (``pass``,
        ``FAIL``, ``-`` without a reference, ``SANITY`` for a failed run,
        whose ``point`` names the task and ``reference`` the reason).
    """
    verdicts: dict[str, list[Mapping[str, Any]]] = {}
    for c in summary.get("checks", []):
        if c.get("mean") is not None:
            key = json.dumps([c["benchmark"], c["figure"], c["params"], c["labels"]],
                             sort_keys=True, default=str)
            verdicts.setdefault(key, []).append(c)
    rows = []
    for g in summary.get("groups", []):
        key = json.dumps([g["benchmark"], g["figure"], g["params"], g["labels"]],
                         sort_keys=True, default=str)
        checks = verdicts.get(key, [])
        status = "-" if not checks else ("pass" if all(c["passed"] for c in checks) else "FAIL")
        ref = "; ".join(f"{_fmt(c['reference'][0])} ({_fmt(c['reference'][1])}, "
                        f"{_fmt(c['reference'][2])})" for c in checks)
        rows.append({"benchmark": g["benchmark"], "point": _where(g["params"], g["labels"]),
                     "figure": g["figure"], "n": g["n"], "mean": g["mean"],
                     "stdev": g["stdev"], "min": g["min"], "max": g["max"], "unit": g["unit"],
                     "reference": ref or "-", "status": status})
    for r in summary.get("runs", []):
        if r.get("sanity"):
            rows.append({"benchmark": r["benchmark"], "point": f"task {r['taskId']}",
                         "figure": "-", "n": 0, "mean": None, "stdev": None, "min": None,
                         "max": None, "unit": "-", "reference": "; ".join(r["sanity"]),
                         "status": "SANITY"})
    return rows


def comparison_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """One row per compared group: ``meanA``, ``meanB``, ``change``, ``p``, ``verdict``."""
    return [{"benchmark": c.benchmark, "point": _where(c.params, c.labels), "figure": c.figure,
             "nA": len(c.a), "meanA": sum(c.a) / len(c.a), "nB": len(c.b),
             "meanB": sum(c.b) / len(c.b), "unit": c.unit, "change": f"{c.change:+.1%}",
             "p": c.p, "verdict": c.verdict} for c in comparisons]


def render(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """Render table rows as text.

    Parameters
    ----------
    rows
        Dicts with the same keys (the columns, in order).
    fmt
        ``table`` (aligned columns), ``markdown``, ``csv`` or ``json``.

    Returns
    -------
    str
        The table, newline-terminated.

    Raises
    ------
    ValueError
        An unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str) + "\n"
    if not rows:
        return ""
    cols = list(rows[0])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r[k] is None else r[k] for k in cols})
        return buf.getvalue()
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    if fmt == "markdown":
        esc = [[c.replace("|", "\\|") for c in line] for line in cells]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
        lines += ["| " + " | ".join(line) + " |" for line in esc]
        return "\n".join(lines) + "\n"
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------- plots


def _size_axis(groups: Sequence[Mapping[str, Any]]) -> str | None:
    names: dict[str, set[Any]] = {}
    for g in groups:
        for k, v in {**g["params"], **g["labels"]}.items():
            if isinstance(v, (int, float)) and ("size" in k.lower() or "bytes" in k.lower()):
                names.setdefault(k, set()).add(v)
    multi = [k for k, vals in names.items() if len(vals) > 1]
    return multi[0] if multi else None


def _varying(groups: Sequence[Mapping[str, Any]], skip: str) -> list[str]:
    seen: dict[str, set[str]] = {}
    for g in groups:
        for k, v in {**g["params"], **g["labels"]}.items():
            seen.setdefault(k, set()).add(json.dumps(v, default=str))
    return [k for k, vals in seen.items() if k != skip and len(vals) > 1]


def _series(groups: Sequence[Mapping[str, Any]], x: str
            ) -> dict[str, list[tuple[float, float, float]]]:
    others = _varying(groups, x)
    out: dict[str, list[tuple[float, float, float]]] = {}
    for g in groups:
        values = {**g["params"], **g["labels"]}
        if not isinstance(values.get(x), (int, float)):
            continue
        name = " ".join(f"{k}={values.get(k)}" for k in others) or g["figure"]
        out.setdefault(name, []).append((float(values[x]), g["mean"], g["stdev"]))
    return {k: sorted(v) for k, v in out.items()}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_summary(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Draw the plots of a summary (see the module documentation) as PNG files.

    Parameters
    ----------
    summary
        A campaign summary.
    out_dir
        Folder to write them to (created).

    Returns
    -------
    list of Path
        The PNG files written (none when the summary has no groups).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    by_figure: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for g in summary.get("groups", []):
        by_figure.setdefault((g["benchmark"], g["figure"]), []).append(g)
    written = []
    for (bench, figure), groups in by_figure.items():
        unit = groups[0]["unit"]
        stem = f"{bench}-{figure}"
        size = _size_axis(groups)
        for x, kind in ((size, "size"), ("nodes", "nodes")):
            if x is None or (kind == "nodes" and (size is not None
                                                   or "nodes" not in _varying(groups, ""))):
                continue
            series = _series(groups, x)
            if not series:
                continue
            fig, ax = plt.subplots(figsize=(8, 5))
            for name, pts in series.items():
                xs, ys, es = zip(*pts)
                line = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
                if kind == "nodes" and len(xs) > 1:
                    n0, y0 = xs[0], ys[0]
                    ideal = [y0 * n0 / n if lower_is_better(unit) else y0 * n / n0 for n in xs]
                    ax.plot(xs, ideal, linestyle="--", color=line.lines[0].get_color(),
                            linewidth=1, alpha=0.7,
                            label=f"ideal ({name})" if len(series) > 1 else "ideal scaling")
            means = [p[1] for pts in series.values() for p in pts]
            if min(means) > 0 and max(means) / min(means) > 100:
                ax.set_yscale("log")  # values over several decades
            if kind == "size":
                ax.set_xscale("log", base=2)
            else:
                ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
            ax.set_xlabel(x if kind == "size" else "nodes")
            ax.set_ylabel(f"{figure} [{unit}]")
            ax.set_title(f"{bench}: {figure} against {'message size' if kind == 'size' else 'node count'}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="small")
            written.append(_save(fig, out_dir / f"{stem}-{kind}.png"))
        shown = groups[:MAX_SPREAD_BOXES]
        fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(shown)), 5))
        others = _varying(shown, "")
        names = [" ".join(f"{k}={({**g['params'], **g['labels']}).get(k)}" for k in others)
                 or figure for g in shown]
        ax.boxplot([g["values"] for g in shown])
        ax.set_xticks(range(1, len(shown) + 1), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"{figure} [{unit}]")
        ax.set_title(f"{bench}: {figure}, run-to-run spread over repeats")
        ax.grid(True, axis="y", alpha=0.3)
        written.append(_save(fig, out_dir / f"{stem}-spread.png"))
    return written


def write_html(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
               pngs: Sequence[Path], path: Path) -> Path:
    """Write a self-contained HTML report: the table and every PNG embedded (base64).

    Parameters
    ----------
    summary
        The campaign summary (its name, job, pool, times).
    rows
        :func:`table_rows` of it.
    pngs
        :func:`plot_summary` files.
    path
        The HTML file to write.

    Returns
    -------
    Path
        ``path``.
    """
    camp = summary.get("campaign", {})
    title = f"Benchmark campaign {camp.get('name', '')} ({summary.get('jobId', '')})"
    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr class='{}'>{}</tr>".format(html.escape(str(r.get("status", ""))),
                                        "".join(f"<td>{html.escape(_fmt(r[c]))}</td>"
                                                for c in cols))
        for r in rows)
    imgs = "".join(
        f"<figure><img alt='{html.escape(p.name)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'/><figcaption>{html.escape(p.name)}"
        f"</figcaption></figure>" for p in pngs)
    verdict = "passed" if summary.get("passed") else "FAILED"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}tr.FAIL,tr.SANITY{{background:#fdd}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Pool {html.escape(str(summary.get('poolId', '')))}, {html.escape(str(summary.get('startTime', '')))}
to {html.escape(str(summary.get('endTime', '')))}: <b>{verdict}</b>.
{html.escape(str(camp.get('description', '')))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{imgs}
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path
