"""Docker's RFC 3339 times with nanoseconds, as the reaper reads them."""

from datetime import UTC, datetime

from node_runner.reaper import _parse_docker_time


def test_nanoseconds_are_cut_to_microseconds_in_utc():
    parsed = _parse_docker_time("2026-11-22T22:40:01.123456789Z")
    assert parsed == datetime(2026, 11, 22, 22, 40, 1, 123456, tzinfo=UTC)


def test_a_time_without_a_fraction_and_the_zero_time_parse():
    assert _parse_docker_time("2026-11-22T22:40:01Z") == datetime(2026, 11, 22, 22, 40, 1, tzinfo=UTC)
    assert _parse_docker_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)


def test_garbage_is_none():
    assert _parse_docker_time("") is None
    assert _parse_docker_time("yesterday") is None
