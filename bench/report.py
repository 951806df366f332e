"""Results out: a table on stdout, ``latest.json``, ``latest.md`` and one PNG per scenario.

``data`` is the dict ``latest.json`` holds (see :func:`bench.__main__.run_all`);
everything here only formats it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["print_tables", "write_charts", "write_json", "write_markdown"]

MIB = 1024 * 1024

# Columns per kind of scenario: (header, metric, formatter name).
_THROUGHPUT_COLUMNS = (
    ("{unit}", "throughput", "count"),
    ("p50 ms", "p50_ms", "ms"),
    ("p99 ms", "p99_ms", "ms"),
    ("max ms", "max_ms", "ms"),
)
_BULK_COLUMNS = (
    ("{unit}", "throughput", "count"),
    ("call ms", "p50_ms", "ms"),
)
_COST_COLUMNS = (
    ("daemon peak RSS MiB", "peak_rss_mib", "mib"),
    ("daemon CPU s/10k", "daemon_cpu_s_per_10k", "cpu"),
    ("client CPU s/10k", "client_cpu_s_per_10k", "cpu"),
    ("total CPU s/10k", "total_cpu_s_per_10k", "cpu"),
)


def _columns(scenario_id: str, info: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    if scenario_id == "S6":
        return _COST_COLUMNS
    if info.get("workload") == "bulk":
        return _BULK_COLUMNS
    return _THROUGHPUT_COLUMNS


def _num(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "mib":
        return f"{value:.1f}"
    if kind == "cpu":
        return f"{value:.2f}"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _cell(stat: dict[str, Any] | None, kind: str, dash: str) -> str:
    if not stat:
        return "-"
    med = _num(stat.get("median"), kind)
    if med == "-":
        return med
    lo, hi = _num(stat.get("min"), kind), _num(stat.get("max"), kind)
    if lo == hi:
        return med
    return f"{med} ({lo}{dash}{hi})"


def _rows(data: dict[str, Any], sid: str, dash: str) -> tuple[list[str], list[list[str]]]:
    info = data["scenarios"][sid]
    columns = _columns(sid, info)
    header = ["contender", "sync"] + [c[0].format(unit=info["unit"]) for c in columns] + ["errors"]
    rows = []
    for case in info["cases"].values():
        summary = case["summary"]
        row = [case["label"], case["synchronous"].upper()]
        row += [_cell(summary.get(metric), kind, dash) for _, metric, kind in columns]
        failed = summary.get("runs_failed", 0)
        errors = str(summary.get("errors", 0))
        if failed:
            errors += f", {failed} run(s) failed"
        if summary.get("runs_not_run"):
            errors += f", {summary['runs_not_run']} run(s) not run"
        row.append(errors)
        rows.append(row)
    return header, rows


def _target_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["id", "target", "measured", "per repeat", "verdict"]
    rows = []
    for t in data["targets"]:
        value = t.get("value")
        if value is None:
            measured = "-"
        elif t["id"] == "T7":
            measured = f"{value:.1f} MiB"
        else:
            measured = f"{value:.2f}x"
        per = ", ".join(f"{v:.2f}" for v in t.get("per_repeat", []))
        verdict = t["verdict"].upper() + (f": {t['reason']}" if t.get("reason") else "")
        rows.append([t["id"], t["target"], measured, per or "-", verdict])
    return header, rows


def _backup_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Per run of "daemon + Litestream": the restore checked against the file the daemon wrote."""
    cases = [
        c
        for c in data["scenarios"].get("S1", {}).get("cases", {}).values()
        if c["contender"] == "daemon_replicate"
    ]
    rows = []
    for case in cases:
        for run in case["runs"]:
            if "restore_s" not in run:
                continue
            rows.append(
                [
                    case["synchronous"].upper(),
                    str(run["repeat"] + 1),
                    f"{run['rows_in_db']:,}",
                    f"{run['restored_rows']:,}",
                    f"{run['daemon_stop_s']:.2f}",
                    f"{run['restore_s']:.2f}",
                    f"{run['replica_bytes'] / 1048576:.1f}",
                    f"{run['db_bytes'] / 1048576:.1f}",
                ]
            )
    if not rows:
        return None
    header = [
        "sync",
        "repeat",
        "rows in file",
        "rows restored",
        "daemon stop s",
        "restore s",
        "replica MiB",
        "file MiB",
    ]
    return header, rows


_BACKUP_TITLE = (
    "Backup: after each S1 'daemon + Litestream' run the daemon is stopped (its final "
    "`litestream sync` included in 'daemon stop s') and the replica restored"
)


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def print_tables(data: dict[str, Any]) -> None:
    """The results as plain-text tables on stdout."""
    print()
    for sid, info in data["scenarios"].items():
        print(
            f"{sid} {info['title']} ({info['size']}; {data['repeats']} repeat(s); median (min-max))"
        )
        print(_text_table(*_rows(data, sid, "-")))
        print()
    backup = _backup_rows(data)
    if backup is not None:
        print(_BACKUP_TITLE)
        print(_text_table(*backup))
        print()
    header, rows = _target_rows(data)
    print("Targets (same-run ratios of medians)")
    print(
        _text_table(
            header,
            [
                [
                    *r[:1],
                    r[1].replace("≥", ">=").replace("≤", "<=").replace("x", "x"),
                    r[2].replace("x", "x"),
                    *r[3:],
                ]
                for r in rows
            ],
        )
    )
    print()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(data: dict[str, Any], path: str) -> None:
    """``latest.json``: everything, NaN written as null."""
    with open(path, "w") as fh:
        json.dump(_clean(data), fh, indent=1, sort_keys=False)
        fh.write("\n")


def write_markdown(data: dict[str, Any], path: str, charts: dict[str, str]) -> None:
    """``latest.md``: machine, targets, one table (and chart) per scenario."""
    m = data["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# FastQuartDB benchmark results",
        "",
        f"Generated {data['generated']} by `{data['command']}` in {data['elapsed_s']:.0f} s"
        f"{' (QUICK sizes: a smoke run, not a measurement)' if data['quick'] else ''}.",
        f"Code: git {m.get('git_revision') or '?'}{' (uncommitted changes)' if m.get('git_dirty') else ''}."
        f" Repeats: {data['repeats']}, interleaved; event loop in worker processes: {data['loop']}.",
        "Cells are the median of the repeats with (min-max). Latency is per request, timed in the"
        " worker around each awaited call. Judge by the ratios: they were measured side by side.",
        "",
        "## Machine",
        "",
        _md_table(
            ["nproc", "CPU", "RAM", "OS", "Python", "SQLite", "temp dir"],
            [
                [
                    str(m["nproc"]),
                    m["cpu_model"],
                    f"{m['ram_gib']} GiB",
                    m["os"],
                    f"{m['python_impl']} {m['python']}",
                    m["sqlite"],
                    f"{m['tmp_dir']} ({m['tmp_fs']})",
                ]
            ],
        ),
        "",
        f"Packages: {pkgs}.",
        "",
        f"Load average (1, 5, 15 min) at start: {m['load_avg_at_start']}, at end:"
        f" {m.get('load_avg_at_end')}; each run's 1-minute load is in latest.json (`load_avg_1m`)."
        f" fastquartdb source fingerprint: {m.get('source_fingerprint')}"
        + (
            f" -> {m.get('source_fingerprint_at_end')}: **the code changed during the run**."
            if m.get("source_changed_during_run")
            else " (unchanged during the run)."
        ),
        "",
        "## Targets",
        "",
        _md_table(*_target_rows(data)),
        "",
    ]
    if "summary" in charts:
        lines += [f"![summary]({os.path.basename(charts['summary'])})", ""]
    for sid, info in data["scenarios"].items():
        lines += [f"## {sid} {info['title']}", "", f"{info['description']} {info['size']}.", ""]
        lines += [_md_table(*_rows(data, sid, "-")), ""]
        for note in info.get("notes", []):
            lines += [f"- {note}"]
        if info.get("notes"):
            lines.append("")
        if sid in charts:
            lines += [f"![{sid}]({os.path.basename(charts[sid])})", ""]
        backup = _backup_rows(data) if sid == "S1" else None
        if backup is not None:
            lines += [f"{_BACKUP_TITLE}:", "", _md_table(*backup), ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


# ---------------------------------------------------------------- charts

_COLORS = {"full": "#1f77b4", "normal": "#ff7f0e"}


def _series(
    info: dict[str, Any], metric: str
) -> tuple[list[str], dict[str, list[tuple[float, float, float]]]]:
    """Contender labels in order, and per sync setting a (median, min, max) per contender."""
    labels: list[str] = []
    for case in info["cases"].values():
        if case["label"] not in labels:
            labels.append(case["label"])
    series: dict[str, list[tuple[float, float, float]]] = {}
    for case in info["cases"].values():
        stat = case["summary"].get(metric) or {}
        values = series.setdefault(case["synchronous"], [(math.nan,) * 3] * len(labels))
        values = list(values)
        values[labels.index(case["label"])] = (
            _f(stat.get("median")),
            _f(stat.get("min")),
            _f(stat.get("max")),
        )
        series[case["synchronous"]] = values
    return labels, series


def _f(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _bars(ax: Any, info: dict[str, Any], metric: str, ylabel: str, *, log: bool = False) -> None:
    labels, series = _series(info, metric)
    width = 0.8 / max(1, len(series))
    for i, (sync, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        med = [v[0] for v in values]
        err = [
            [max(0.0, v[0] - v[1]) if not math.isnan(v[1]) else 0.0 for v in values],
            [max(0.0, v[2] - v[0]) if not math.isnan(v[2]) else 0.0 for v in values],
        ]
        ax.bar(
            xs,
            med,
            width,
            yerr=err,
            capsize=3,
            label=f"synchronous={sync.upper()}",
            color=_COLORS.get(sync),
        )
        for x, v, top in zip(xs, med, (v[2] for v in values)):
            if not math.isnan(v):
                # Above the whisker, so the label never sits on the error bar.
                y = top if not math.isnan(top) and top > v else v
                ax.annotate(
                    _num(v, "count" if v >= 100 else "ms"),
                    (x, y),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([label.replace(" ", "\n", 1) for label in labels], fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def write_charts(data: dict[str, Any], out_dir: str) -> dict[str, str]:
    """One PNG per scenario plus ``summary.png``; returns scenario id -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, str] = {}
    subtitle = f"{data['machine']['nproc']} CPU, {data['machine']['cpu_model']}"
    for sid, info in data["scenarios"].items():
        if sid == "S6":
            fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
            _bars(
                a,
                {"cases": {k: c for k, c in info["cases"].items() if c["contender"] == "daemon"}},
                "peak_rss_mib",
                "daemon peak RSS (MiB)",
            )
            a.axhline(60, color="red", linestyle="--", linewidth=1, label="T7 bound 60 MiB")
            a.legend(fontsize=8)
            _bars(b, info, "total_cpu_s_per_10k", "CPU s per 10k requests (clients + daemon)")
        elif info.get("workload") == "bulk":
            fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
            _bars(a, info, "throughput", info["unit"])
            _bars(b, info, "p50_ms", "time for the call (ms)")
        else:
            fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
            _bars(a, info, "throughput", info["unit"])
            _bars(b, info, "p99_ms", "p99 latency per request (ms, log)", log=True)
        fig.suptitle(
            f"{sid} {info['title']}: {info['size']} — median of {data['repeats']}, bars min-max\n{subtitle}",
            fontsize=10,
        )
        fig.tight_layout()
        path = os.path.join(out_dir, f"{sid}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[sid] = path
    summary = _summary_chart(plt, data, out_dir, subtitle)
    if summary:
        paths["summary"] = summary
    return paths


def _summary_chart(plt: Any, data: dict[str, Any], out_dir: str, subtitle: str) -> str | None:
    s1 = data["scenarios"].get("S1")
    targets = [t for t in data["targets"] if t.get("value") is not None]
    if s1 is None and not targets:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    if s1 is not None:
        _bars(a, s1, "throughput", "inserts/s (log)", log=True)
        a.set_title("S1: 4 processes x 16 tasks inserting single rows", fontsize=9)
    else:
        a.axis("off")
    # Headroom: >= 1 means met, whichever way the bound points.
    names, heads, colors = [], [], []
    for t in targets:
        value, bound = t["value"], t["bound"]
        head = value / bound if t["sense"] == ">=" else (bound / value if value else math.inf)
        measured = f"{value:.1f} MiB" if t["id"] == "T7" else f"{value:.2f}x"
        names.append(
            f"{t['id']}: {measured} ({t['sense']} {bound:g}{' MiB' if t['id'] == 'T7' else 'x'})"
        )
        heads.append(head)
        colors.append("#2ca02c" if t["met"] else "#d62728")
    ys = list(range(len(names)))[::-1]
    b.barh(ys, heads, color=colors)
    b.axvline(1.0, color="black", linewidth=1)
    b.set_yticks(ys)
    b.set_yticklabels(names, fontsize=8)
    b.set_xscale("log")
    b.set_xlabel("headroom (measured vs bound; ≥ 1 = met)")
    b.set_title("targets T1-T8, same-run ratios", fontsize=9)
    b.grid(axis="x", alpha=0.3)
    fig.suptitle(f"FastQuartDB benchmark — {subtitle}", fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir, "summary.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
