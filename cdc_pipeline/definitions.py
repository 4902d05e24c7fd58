"""The one Dagster code location of cdc_pipeline (``dagster ... -m cdc_pipeline.definitions``).

It holds the resources so far; the capture sensor, the load job and the checks join it as they
are built (see the issues). Nothing here reads the environment at import time: ``dg.EnvVar`` is
resolved when a run or a tick needs the resource.
"""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource

defs = dg.Definitions(
    resources={
        "source": SourceResource(url=dg.EnvVar("CDC_MYSQL_URL")),
        "mongo": MongoSinkResource(uri=dg.EnvVar("CDC_MONGO_URI")),
    },
)
