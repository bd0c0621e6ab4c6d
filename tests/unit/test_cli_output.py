"""What the CLI shows of an offer."""

from __future__ import annotations

from sfs.cli import offer_listing
from sfs.peer.protocol import FileInfo, Offer


def offer(count: int) -> Offer:
    return Offer(tuple(FileInfo(f"f{i}.txt", 1000 * i) for i in range(count)), "alice")


def test_every_name_fits() -> None:
    assert offer_listing(offer(3), max_lines=10) == [
        "  f0.txt  0 B",
        "  f1.txt  1.0 kB",
        "  f2.txt  2.0 kB",
    ]


def test_more_than_a_screenful_ends_with_a_count() -> None:
    lines = offer_listing(offer(20), max_lines=10)
    assert len(lines) == 10
    assert lines[-1] == "  … and 11 more"
    assert lines[8] == "  f8.txt  8.0 kB"


def test_a_tiny_terminal_still_shows_a_few() -> None:
    assert len(offer_listing(offer(20), max_lines=-3)) == 5


def test_names_are_shown_safe() -> None:
    hostile = Offer((FileInfo("../\x1b[2Jevil\u202e.txt", 1), FileInfo("b", 2)), "")
    assert offer_listing(hostile, max_lines=10)[0] == "  [2Jevil.txt  1 B"
