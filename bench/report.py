"""Turns the runs into figures: medians with min and max, ratios to baselines, memory, scaling.

Measures nothing itself. Every throughput is a ratio against a baseline measured in the same
run on the same data: ``ratio`` is the product's median rows/s divided by the baseline's median
rows/s (1.0 = as fast as the bare loop; 0.25 = four times slower). Peak RSS is compared the same
way (product's median peak divided by the baseline's). Scaling fits seconds against backlog
rows by least squares (``seconds_per_100k_rows``, and the intercept ``fixed_seconds``: start-up
cost that does not grow with the backlog) and reports ``linearity``: the per-row time at
the largest backlog divided by the per-row time at the smallest (1.0 = perfectly linear).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

BASELINE_OF = {"capture": "library", "load": "insert_many"}
LATENCY_NOT_MEASURED = {
    "status": "not measured",
    "reason": "skipped (not in --stages, or --latency-seconds 0); no figure is reported unless"
    " it is measured",
}


def stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of the runs (None when there are none)."""
    present = [value for value in values if value is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {
        "median": round(statistics.median(present), 4),
        "min": round(min(present), 4),
        "max": round(max(present), 4),
        "runs": len(present),
    }


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 4) if top is not None and bottom else None


def stage_figures(stage: str, backlog: dict[str, Any], series: dict[str, list[dict[str, Any]]]):
    """One stage on one backlog: per series the rows/s, seconds and peak RSS, and the ratios."""
    figures: dict[str, Any] = {
        "source": backlog["source"],
        "variant": backlog["variant"],
        "rows": backlog["rows"],
        "transactions": backlog["transactions"],
        "stage": stage,
        "baseline": BASELINE_OF[stage],
        "series": {},
    }
    for name, runs in series.items():
        figures["series"][name] = {
            "rows_per_second": stats(run["rows_per_second"] for run in runs),
            "seconds": stats(run["seconds"] for run in runs),
            "peak_rss_mib": stats(run.get("peak_rss_mib") for run in runs),
            "cpu_us_per_row": stats(run.get("cpu_us_per_row") for run in runs),
            "runs": runs,
        }
    speeds = {name: item["rows_per_second"]["median"] for name, item in figures["series"].items()}
    baseline = BASELINE_OF[stage]
    figures["ratio_vs_baseline"] = _ratio(speeds.get("product"), speeds.get(baseline))
    if "insert_many_all" in speeds:
        figures["ratio_vs_insert_many_all"] = _ratio(
            speeds.get("product"), speeds["insert_many_all"]
        )
    if "reference" in speeds:
        figures["ratio_vs_reference"] = _ratio(speeds.get("product"), speeds["reference"])
        figures["baseline_ratio_vs_reference"] = _ratio(speeds.get(baseline), speeds["reference"])
    return figures


def memory_figures(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peak RSS of the product's process against the baseline's, per stage and backlog size."""
    rows = []
    for item in stages:
        product = item["series"]["product"]["peak_rss_mib"]
        baseline = item["series"][item["baseline"]]["peak_rss_mib"]
        rows.append(
            {
                "source": item["source"],
                "variant": item["variant"],
                "rows": item["rows"],
                "stage": item["stage"],
                "product_peak_rss_mib": product,
                "baseline_peak_rss_mib": baseline,
                "ratio_vs_baseline": _ratio(product["median"], baseline["median"]),
            }
        )
    return rows


def _fit(points: list[tuple[int, float]]) -> dict[str, Any]:
    """Least-squares seconds per 100k rows and the per-row time ratio largest/smallest."""
    points = sorted(points)
    if len(points) == 1:
        rows, seconds = points[0]
        return {
            "seconds_per_100k_rows": round(seconds / rows * 100_000, 3),
            "fixed_seconds": None,
            "linearity": None,
        }
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points
    )
    (small_rows, small_seconds), (large_rows, large_seconds) = points[0], points[-1]
    linearity = (large_seconds / large_rows) / (small_seconds / small_rows)
    return {
        "seconds_per_100k_rows": round(slope * 100_000, 3),
        "fixed_seconds": round(mean_y - slope * mean_x, 3),
        "linearity": round(linearity, 3),
    }


def scaling_figures(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median seconds against backlog size, per source, variant, stage and series."""
    groups: dict[tuple[str, str, str, str], list[tuple[int, float]]] = {}
    for item in stages:
        for name, series in item["series"].items():
            seconds = series["seconds"]["median"]
            if seconds is not None:
                key = (item["source"], item["variant"], item["stage"], name)
                groups.setdefault(key, []).append((item["rows"], seconds))
    result = []
    for (source, variant, stage, name), points in groups.items():
        result.append(
            {
                "source": source,
                "variant": variant,
                "stage": stage,
                "series": name,
                "points": [{"rows": rows, "median_seconds": s} for rows, s in sorted(points)],
                **_fit(points),
            }
        )
    return result


# -- the printed summary -------------------------------------------------------------------------
def _rate(figure: dict[str, Any]) -> str:
    if figure["median"] is None:
        return "-"
    return f"{figure['median']:,.0f} ({figure['min']:,.0f}-{figure['max']:,.0f})"


def _cpu(figure: dict[str, Any]) -> str:
    if figure["median"] is None:
        return "-"
    return f"{figure['median']:,.1f} ({figure['min']:,.1f}-{figure['max']:,.1f})"


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of every figure in the report, for the terminal."""
    lines = [
        "throughput, rows/s: median (min-max) of "
        f"{report['options']['runs']} runs; ratio = product / baseline",
        "reference: capture, the C tool (mariadb-binlog/mysqlbinlog -v); load, insert_many of"
        " every document the product wrote (change log + mirrors)",
        f"{'source':<8}{'table':<10}{'rows':>9}  {'stage':<8}{'product':<28}"
        f"{'baseline':<28}{'ratio':>7}  {'reference':<28}{'ratio':>7}",
    ]
    for item in report["stages"]:
        series = item["series"]
        reference = series.get("reference") or series.get("insert_many_all")
        ratio_ref = item.get("ratio_vs_reference", item.get("ratio_vs_insert_many_all"))
        lines.append(
            f"{item['source']:<8}{item['variant']:<10}{item['rows']:>9,}  {item['stage']:<8}"
            f"{_rate(series['product']['rows_per_second']):<28}"
            f"{_rate(series[item['baseline']]['rows_per_second']):<28}"
            f"{_number(item['ratio_vs_baseline']):>7}  "
            f"{(_rate(reference['rows_per_second']) if reference else '-'):<28}"
            f"{_number(ratio_ref):>7}"
        )
    lines += [
        "",
        "client CPU, microseconds per row event (process CPU time, not wall): median (min-max);"
        " ratio = product / baseline",
        f"{'source':<8}{'table':<10}{'rows':>9}  {'stage':<8}{'product':<22}"
        f"{'baseline':<22}{'ratio':>7}",
    ]
    for item in report["stages"]:
        series = item["series"]
        product = series["product"].get("cpu_us_per_row")
        baseline = series[item["baseline"]].get("cpu_us_per_row")
        if product is None or baseline is None:
            continue  # a report written before CPU was measured
        lines.append(
            f"{item['source']:<8}{item['variant']:<10}{item['rows']:>9,}  {item['stage']:<8}"
            f"{_cpu(product):<22}{_cpu(baseline):<22}"
            f"{_number(_ratio(product['median'], baseline['median'])):>7}"
        )
    lines += ["", "peak RSS, MiB: median (min-max); ratio = product / baseline"]
    lines.append(
        f"{'source':<8}{'table':<10}{'rows':>9}  {'stage':<8}{'product':<22}"
        f"{'baseline':<22}{'ratio':>7}"
    )
    for item in report["memory"]:
        lines.append(
            f"{item['source']:<8}{item['variant']:<10}{item['rows']:>9,}  {item['stage']:<8}"
            f"{_rate(item['product_peak_rss_mib']):<22}{_rate(item['baseline_peak_rss_mib']):<22}"
            f"{_number(item['ratio_vs_baseline']):>7}"
        )
    lines += [
        "",
        "scaling: least-squares seconds per 100k rows, fixed = intercept (start-up) seconds,",
        "linearity = per-row time at the largest backlog / at the smallest (1.0 = linear)",
        f"{'source':<8}{'table':<10}{'stage':<8}{'series':<16}{'s/100k':>9}{'fixed s':>9}"
        f"{'linearity':>11}  sizes",
    ]
    for item in report["scaling"]:
        sizes = ", ".join(f"{point['rows']:,}" for point in item["points"])
        lines.append(
            f"{item['source']:<8}{item['variant']:<10}{item['stage']:<8}{item['series']:<16}"
            f"{item['seconds_per_100k_rows']:>9.2f}{_number(item['fixed_seconds']):>9}"
            f"{_number(item['linearity']):>11}  {sizes}"
        )
    lines += ["", *_latency_lines(report["latency"])]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    if latency["status"] != "measured":
        return [f"end-to-end latency: {latency['status']} ({latency['reason']})"]
    lines = [
        "end-to-end latency, seconds from commit to visible in MongoDB: median (min-max) over"
        " runs; ratio = product p50 / stream p50",
        f"{'source':<8}{'series':<9}{'p50':<22}{'p95':<22}{'max':<22}{'ratio':>7}",
    ]
    for source, figures in latency["by_source"].items():
        for name, series in figures["series"].items():
            ratio = figures["ratio_vs_baseline"] if name == "product" else None
            lines.append(
                f"{source:<8}{name:<9}{_seconds(series['p50']):<22}{_seconds(series['p95']):<22}"
                f"{_seconds(series['max']):<22}{_number(ratio):>7}"
            )
        workload = figures["workload"]
        lines.append(
            f"  workload: {workload['rate']:g} transactions/s of {workload['rows_per_transaction']}"
            f" rows for {workload['seconds']:g} s; product rounds {workload['interval']:g} s apart"
            " (the Dagster sensor adds up to its 30 s interval)"
        )
    return lines


def _seconds(figure: dict[str, Any]) -> str:
    if figure["median"] is None:
        return "-"
    return f"{figure['median']:.3f} ({figure['min']:.3f}-{figure['max']:.3f})"
