"""Print the README's fault table from the JSON lines the fault suite appends to
``$CDC_FAULT_RESULTS`` (one line per scenario and source).

Usage: CDC_FAULT_RESULTS=/tmp/f.jsonl make test; python scripts/fault_table.py /tmp/f.jsonl
"""

import json
import sys

NAMES = {"mariadb": "MariaDB 10.11", "mysql": "MySQL 9.7"}


def main(path: str) -> None:
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows.sort(key=lambda row: (int(row["scenario"].split()[0]), row["source"]))
    print(
        "| scenario | source | iterations | injected | transactions (schema changes) |"
        " row events | lost | duplicated | restart to next load start, median / max (budget);"
        " its end, max |"
        " seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        injected = ", ".join(f"{name}: {count}" for name, count in row["injected"].items())
        print(
            f"| {row['scenario']} | {NAMES.get(row['source'], row['source'])} |"
            f" {row['iterations']} | {injected} |"
            f" {row['transactions']:,} ({row['schema_changes']}) | {row['events_written']:,} |"
            f" {row['events_lost']} | {row['events_duplicated']} | {_recovery(row)} |"
            f" {row['seconds']:.0f} |"
        )


def _recovery(row: dict[str, object]) -> str:
    """Real-daemon scenarios: seconds from a restart to the next successful load run."""
    if not row.get("recovery_budget"):
        return ""
    return (
        f"{row['recovery_median']} / {row['recovery_max']} s ({row['recovery_budget']:g} s);"
        f" {row.get('loaded_max')} s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
