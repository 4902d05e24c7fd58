"""Dagster resources: the connection settings of the source and of the sink.

Secrets (the source URL with its password, the MongoDB URI) reach Dagster only through
``dg.EnvVar``, so run configs shown in the UI carry the variable's name, never its value. The
non-secret settings (staging folder, source name, bounds) are read from the environment when a
tick or run needs them, with the defaults of ../shared/CONTRACT.md.
"""

from __future__ import annotations

import os
from dataclasses import replace

import dagster as dg
from pydantic import Field

from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, SourceUrl


class SourceResource(dg.ConfigurableResource):
    """The MySQL or MariaDB server whose binlog is captured."""

    url: str = Field(description="mysql://user:password@host:port, from CDC_MYSQL_URL")

    def capture_settings(self) -> CaptureSettings:
        """Capture settings: this resource's URL plus the CDC_* variables of the environment."""
        environ = {**os.environ, "CDC_MYSQL_URL": self.url}
        settings = CaptureSettings.from_env(environ)
        return replace(settings, source_url=SourceUrl.parse(self.url))


class MongoSinkResource(dg.ConfigurableResource):
    """The MongoDB database the change log and mirror collections are loaded into."""

    uri: str = Field(description="a MongoDB URI, from CDC_MONGO_URI")

    def mongo_settings(self) -> MongoSettings:
        return MongoSettings.from_env({**os.environ, "CDC_MONGO_URI": self.uri})
