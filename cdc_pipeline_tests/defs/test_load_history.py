"""The recent-loads table of ``mongo_batch`` (pure formatting; the event-log read is covered by
``integration/test_capture_sensor.py``)."""

from datetime import UTC, datetime

from cdc_pipeline.defs.load_history import history_markdown


def load(partition: str, rows: float | None, speed: float | None, lag: float | None) -> dict:
    at = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    return {"partition": partition, "at": at, "rows": rows, "speed": speed, "lag": lag}


def test_the_summary_gives_median_and_max_lag_and_median_speed() -> None:
    text = history_markdown(
        [load("s-3", 1200, 900.4, 2.0), load("s-2", 10, 40, 30.5), load("s-1", 5, 20, 4.0)]
    )
    assert text.splitlines()[0] == "last 3 loads: lag median 4.0 s, max 30.5 s; median 40 rows/s"
    assert "| s-3 | 2026-11-28 04:00:00 | 1,200 | 900 | 2.0 |" in text.splitlines()


def test_unknown_figures_stay_blank_and_are_left_out_of_the_summary() -> None:
    text = history_markdown([load("s-1", 0, None, None)])
    assert text.splitlines()[0] == "last 1 loads"
    assert text.splitlines()[-1] == "| s-1 | 2026-11-28 04:00:00 | 0 |  |  |"


def test_no_loads_says_so() -> None:
    assert history_markdown([]) == "no loads recorded yet"
