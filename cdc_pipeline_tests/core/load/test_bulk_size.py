"""The sink's bulk size: a slow bulk shrinks the next in proportion, a fast full one doubles it."""

from cdc_pipeline.core.load.rebuild import BULK_CHUNK
from cdc_pipeline.core.load.sink import BULK_SECONDS, MIN_BULK, next_bulk_size


def test_a_fast_server_keeps_full_bulks() -> None:
    assert next_bulk_size(BULK_CHUNK, BULK_CHUNK, 0.02) == BULK_CHUNK


def test_a_slow_bulk_shrinks_the_next_to_what_fits_the_time_budget() -> None:
    assert next_bulk_size(1_000, 1_000, 8 * BULK_SECONDS) == 125
    assert next_bulk_size(1_000, 1_000, 1_000 * BULK_SECONDS) == MIN_BULK


def test_fast_full_bulks_grow_back_and_a_short_last_piece_changes_nothing() -> None:
    assert next_bulk_size(125, 125, 0.1 * BULK_SECONDS) == 250
    assert next_bulk_size(800, 800, 0.1 * BULK_SECONDS) == BULK_CHUNK
    assert next_bulk_size(125, 40, 0.1 * BULK_SECONDS) == 125
