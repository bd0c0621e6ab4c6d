"""`--limit-rate`'s token bucket, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.peer.proto.pacing import Pace


def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    pace = Pace(1000, 0.0, largest=100)
    assert pace.burst == 250  # a quarter of a second
    assert pace.spend(250, 0.0) == 0.0
    assert pace.spend(100, 0.0) == pytest.approx(0.1)
    assert pace.spend(100, 0.1) == pytest.approx(0.1)


@given(
    st.integers(1, 10_000_000),
    st.lists(st.integers(1, 300_000), min_size=1, max_size=200),
)
def test_obeying_it_moves_at_the_rate_no_more_and_no_less(rate: int, sizes: list[int]) -> None:
    """Sending as fast as it allows, the bytes moved once each wait is over are
    exactly burst + rate * t: never more (the limit holds), never less (a wait is no
    longer than it must be)."""
    pace = Pace(rate, 0.0)
    now, moved = 0.0, 0
    for size in sizes:
        moved += size
        wait = pace.spend(size, now)
        now += wait
        allowed = pace.burst + rate * now
        assert moved <= allowed * (1 + 1e-9) + 1e-6
        if wait:
            assert moved >= allowed * (1 - 1e-9) - 1e-6


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        Pace(0, 0.0)


@pytest.mark.parametrize(
    ("given", "rate"),
    [
        ("500k", 512_000),
        ("2M", 2 * 1024**2),
        ("1.5G", 1.5 * 1024**3),
        ("100", 100),
        ("2MB/s", 2 * 1024**2),
    ],
)
def test_rates_are_read_as_curl_reads_them(given: str, rate: float) -> None:
    from sfs.commands.options import Rate

    assert Rate().convert(given, None, None) == rate


def test_the_progress_shows_the_limit_beside_the_rate() -> None:
    from sfs.commands.progress import _size_bar, limited

    assert limited(None) == ""
    assert limited(2 * 1024**2) == " (limit 2.1 MB/s)"
    bar = _size_bar()(total=10, disable=True)
    bar.sfs_limit = 1000  # type: ignore[attr-defined]  # as TqdmProgress sets it
    assert bar.format_dict["size_rate"].endswith(" (limit 1.0 kB/s)")
