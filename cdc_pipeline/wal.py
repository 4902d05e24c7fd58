"""The WAL's public reader: one segment's changes as a pandas DataFrame (README "Reading the WAL").

    >>> from cdc_pipeline.wal import read_changes
    >>> changes = read_changes(".cdc_staging/default/segments/seg-000000000001.parquet")

Both WAL formats read the same; see ``core.wal.reader.read_changes`` for the columns and the
``images`` and ``verify`` options.
"""

from cdc_pipeline.core.wal.reader import iter_changes, read_changes

__all__ = ["iter_changes", "read_changes"]
