"""The report's PNG: throughput bars against the baselines, and time against backlog size.

Measures nothing. Left: at the largest backlog, median rows/s of the product, its baseline and
the second reference (capture: the C tool; load: insert_many of every document written), with
min-max whiskers, on a log scale. Right: median seconds against backlog rows, product solid and
baseline dashed. Needs matplotlib (the ``bench`` extra); without it the chart is skipped and the
JSON says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERIES_COLOURS = {
    "product": "#1f77b4",
    "library": "#ff7f0e",
    "insert_many": "#2ca02c",
    "insert_many_all": "#98df8a",
    "reference": "#7f7f7f",
}
GROUP_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
SERIES_LABELS = {
    "product": "cdc_pipeline",
    "library": "bare mysql-replication loop",
    "insert_many": "bare pymongo insert_many (change log)",
    "insert_many_all": "bare insert_many of every document written (change log + mirrors)",
    "reference": "mariadb-binlog / mysqlbinlog -v",
}


def matplotlib_missing() -> str | None:
    """Why no chart can be drawn (None: matplotlib is importable)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (install the project's 'bench' extra)"
    return None


def draw_chart(report: dict[str, Any], path: Path) -> None:
    """Write the two-panel chart of ``report`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, lines) = plt.subplots(1, 2, figsize=(15, 7))
    _throughput_bars(bars, report["stages"])
    _time_lines(lines, report["scaling"])
    machine = report["machine"]
    figure.suptitle(
        f"cdc_pipeline benchmark {report['started_at'][:16]} UTC: {machine['cpu_count']} cores"
        f" {machine['cpu_model']}, {report['options']['runs']} runs each (median, min-max)",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def _throughput_bars(axes: Any, stages: list[dict[str, Any]]) -> None:
    largest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in stages:
        key = (item["source"], item["variant"], item["stage"])
        if key not in largest or item["rows"] > largest[key]["rows"]:
            largest[key] = item
    groups = sorted(
        largest.values(), key=lambda item: (item["stage"], item["source"], item["variant"])
    )
    width = 0.26
    seen: set[str] = set()
    for index, item in enumerate(groups):
        names = [name for name in SERIES_COLOURS if name in item["series"]]
        for offset, name in enumerate(names):
            figure = item["series"][name]["rows_per_second"]
            if figure["median"] is None:
                continue
            x = index + (offset - (len(names) - 1) / 2) * width
            axes.bar(
                x,
                figure["median"],
                width,
                color=SERIES_COLOURS[name],
                label=None if name in seen else SERIES_LABELS[name],
                yerr=[[figure["median"] - figure["min"]], [figure["max"] - figure["median"]]],
                capsize=3,
            )
            seen.add(name)
        if item.get("ratio_vs_baseline") is not None:
            top = max(s["rows_per_second"]["max"] or 0 for s in item["series"].values())
            axes.annotate(
                f"x{item['ratio_vs_baseline']:.2f}",
                (index, top),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=9,
            )
    axes.set_xticks(
        range(len(groups)),
        [f"{g['stage']}\n{g['source']} {g['variant']}\n{g['rows']:,} rows" for g in groups],
        fontsize=8,
    )
    axes.set_yscale("log")
    axes.set_ylabel("rows per second (log)")
    axes.set_title("throughput at the largest backlog (xN = product / baseline)", fontsize=10)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    axes.grid(axis="y", which="both", alpha=0.3)


def _time_lines(axes: Any, scaling: list[dict[str, Any]]) -> None:
    sizes: set[int] = set()
    colours: dict[tuple[str, str, str], Any] = {}
    palette = iter(GROUP_COLOURS * 4)
    for item in scaling:
        if item["series"] in ("reference", "insert_many_all"):
            continue
        group = (item["stage"], item["source"], item["variant"])
        colour = colours.setdefault(group, next(palette))
        points = item["points"]
        rows = [point["rows"] for point in points]
        sizes.update(rows)
        axes.plot(
            rows,
            [point["median_seconds"] for point in points],
            marker="o",
            color=colour,
            linestyle="-" if item["series"] == "product" else "--",
            label=f"{' '.join(group)}: {item['series']}"
            f" ({item['seconds_per_100k_rows']:.1f} s/100k)",
        )
    if sizes and max(sizes) >= 10 * min(sizes):
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlabel("backlog rows")
    axes.set_ylabel("median seconds")
    axes.set_title("time against backlog size (solid: product, dashed: baseline)", fontsize=10)
    axes.legend(fontsize=7, loc="upper left")
    axes.grid(which="both", alpha=0.3)
