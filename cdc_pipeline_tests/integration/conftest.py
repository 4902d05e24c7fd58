"""Integration fixtures live in ../conftest.py (shared with the fault tests)."""

from cdc_pipeline_tests.conftest import make_capture_settings

__all__ = ["make_capture_settings"]
