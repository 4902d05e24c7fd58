"""A description of the machine and software a benchmark ran on, for the JSON report.

Measures nothing; figures are only comparable between reports whose descriptions match.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.servers import BenchServers

LIBRARIES = ("mysql-replication", "pymysql", "pymongo", "pyarrow", "nx-27017", "dagster")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(servers: BenchServers) -> dict[str, Any]:
    """CPU count and model, RAM, load average, Python, libraries and server versions."""
    sources = {}
    for name, server in servers.sources.items():
        sources[name] = str(server.execute("SELECT VERSION()")[0][0])
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "servers": {
            **sources,
            "mongodb": (
                f"nx-27017 {_version('nx-27017')} (SQLite-backed stand-in)"
                if servers.mongo_server is not None
                else "external server from --mongo-uri"
            ),
        },
    }
