"""Both decodings of one binlog rows event, to compare: ``decode_rows`` and the library's own.

``both_decodings`` reads the event's rows with the compiled decoder (``fallback=False``: an error
in the fast path raises instead of hiding behind the library), rewinds the packet, and reads them
again with mysql-replication's ``event.rows``. ``typed`` turns rows into something ``==`` compares
strictly: every value with its type, key order included, Decimals by their digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cdc_pipeline.core.mysql.row_decoder import decode_rows, fast_path_applies


def both_decodings(event: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(the compiled decoder's rows, the library's rows, whether the fast path decoded)."""
    wrapper = event.packet
    inner = wrapper.packet
    start = inner._position, wrapper.read_bytes
    fast_applied = fast_path_applies(event)
    fast = decode_rows(event, fallback=False)
    end = inner._position, wrapper.read_bytes
    inner._position, wrapper.read_bytes = start
    event._RowsEvent__rows = None
    event._RowsEvent__none_sources = {}
    try:
        library = event.rows
    except ValueError as error:
        # A DATE past its month's end (ALLOW_INVALID_DATES): the library raises where the
        # compiled decoder gives None, "out of date range" (as the library does for such a
        # DATETIME). Only that difference is let through: the rows are otherwise the decoder's.
        assert "out of range for month" in str(error), error
        sources = [
            reason
            for row in fast
            for key, image in row.items()
            if key.endswith("none_sources")
            for reason in image.values()
        ]
        assert "out of date range" in sources, (error, fast)
        return fast, fast, fast_applied
    assert (inner._position, wrapper.read_bytes) == end, "the packet ends elsewhere"
    return fast, library, fast_applied


def _typed_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, set):
        return ("set", sorted(value))
    return (type(value).__name__, value)


def typed(rows: list[dict[str, Any]]) -> list[Any]:
    """Rows as nested lists of (key, (type, value)) pairs, in order."""
    return [
        [(part, [(k, _typed_value(v)) for k, v in image.items()]) for part, image in row.items()]
        for row in rows
    ]


def differences(fast: list[dict[str, Any]], library: list[dict[str, Any]]) -> list[str]:
    """Where two decodings differ, one line per value (for assertion messages)."""
    lines = [f"{len(fast)} rows vs {len(library)}"] if len(fast) != len(library) else []
    for index, (mine, theirs) in enumerate(zip(typed(fast), typed(library), strict=False)):
        for (part, image), (other_part, other) in zip(mine, theirs, strict=False):
            if (part, image) != (other_part, other):
                wrong = [f"{a} != {b}" for a, b in zip(image, other, strict=False) if a != b]
                lines.append(f"row {index} {part}: " + "; ".join(wrong or ["order or length"]))
    return lines
