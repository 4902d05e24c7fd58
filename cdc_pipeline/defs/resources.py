"""Dagster resources: the connection settings of the source and of the sink.

Secrets (the source URL with its password, the MongoDB URI) reach Dagster only through
``dg.EnvVar``, so run configs shown in the UI carry the variable's name, never its value.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class SourceResource(dg.ConfigurableResource):
    """The MySQL or MariaDB server whose binlog is captured."""

    url: str = Field(description="mysql://user:password@host:port, from CDC_MYSQL_URL")


class MongoSinkResource(dg.ConfigurableResource):
    """The MongoDB database the change log and mirror collections are loaded into."""

    uri: str = Field(description="a MongoDB URI, from CDC_MONGO_URI")
    database: str = Field(default="cdc", description="target database, from CDC_MONGO_DB")
