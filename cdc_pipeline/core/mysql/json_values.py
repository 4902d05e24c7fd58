"""MySQL JSON read with SQL, as the binlog path converts binary JSON (for ``source_rows``).

MySQL's JSON text cannot tell DECIMAL (or DATE) from DOUBLE (or a string): ``JSON_WALK``, a
recursive walk of the document in the same statement, lists the paths of every scalar whose
type the text hides, and ``mysql_json`` puts the exact values back. DATE becomes
``"YYYY-MM-DD 00:00:00.000000"``; TIME and other opaque values raise ``ValueConversionError``,
as on the binlog path.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from typing import Any

from cdc_pipeline.core.errors import ValueConversionError
from cdc_pipeline.core.values import big_integer, exact_decimal

# Every scalar whose JSON_TYPE the text hides, as [type, path]; the path is a JSON array of
# member names and array indexes. DATETIME and TIMESTAMP print as "YYYY-MM-DD HH:MM:SS.ffffff",
# which is what the binlog path gives them, so they are left out.
JSON_WALK = """(
  WITH RECURSIVE walk (path, node) AS (
    SELECT CAST('[]' AS JSON), src.{column}
    UNION ALL
    SELECT JSON_ARRAY_APPEND(walk.path, '$', CAST(item.position - 1 AS UNSIGNED)), item.node
      FROM walk, JSON_TABLE(walk.node, '$[*]'
        COLUMNS (position FOR ORDINALITY, node JSON PATH '$')) AS item
      WHERE JSON_TYPE(walk.node) = 'ARRAY'
    UNION ALL
    SELECT JSON_ARRAY_APPEND(walk.path, '$', member.name),
        JSON_EXTRACT(walk.node, CONCAT('$.', JSON_QUOTE(member.name)))
      FROM walk, JSON_TABLE(JSON_KEYS(walk.node), '$[*]'
        COLUMNS (name LONGTEXT PATH '$')) AS member
      WHERE JSON_TYPE(walk.node) = 'OBJECT'
  )
  SELECT JSON_ARRAYAGG(JSON_ARRAY(JSON_TYPE(node), path)) FROM walk
  WHERE JSON_TYPE(node) NOT IN ('OBJECT', 'ARRAY', 'BOOLEAN', 'NULL', 'INTEGER',
    'UNSIGNED INTEGER', 'DOUBLE', 'STRING', 'DATETIME', 'TIMESTAMP')
)"""


def mysql_json(text: str, typed_paths: str | None, name: str) -> Any:
    """MySQL JSON text plus the walk's typed paths -> what ``values`` makes of binary JSON."""
    document = json.loads(text, parse_float=decimal.Decimal)
    for json_type, path in json.loads(typed_paths or "[]"):
        if json_type == "DECIMAL":
            document = _replace(document, path, lambda v: exact_decimal(decimal.Decimal(v)))
        elif json_type == "DATE":
            document = _replace(document, path, lambda v: f"{v} 00:00:00.000000")
        else:
            raise ValueConversionError(
                f"column {name} (json): JSON holds a {json_type} value at {path}, which the"
                " binlog path cannot convert faithfully either"
            )
    return _json_value(document)


def _replace(node: Any, path: list[Any], change: Callable[[Any], Any]) -> Any:
    if not path:
        return change(node)
    node[path[0]] = _replace(node[path[0]], path[1:], change)
    return node


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return float(value)  # a DOUBLE: MySQL prints doubles as their shortest repr
    if isinstance(value, int) and not isinstance(value, bool):
        return big_integer(value)
    return value
