"""A sender's progress counts what has left for the receiver, file by file (pure)."""

from __future__ import annotations

from sfs.peer.proto.progress import Departures


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.shown = 0  # bytes shown done, resumed ones included

    def begin(self, files: int, total: int | None) -> None:
        self.calls.append(("begin", files))

    def start(self, name: str, size: int | None) -> None:
        self.calls.append(("start", name))

    def advance(self, n: int) -> None:
        assert n >= 0
        self.shown += n

    def finish(self) -> None:
        self.calls.append(("finish", self.shown))


def test_a_file_is_done_only_when_its_last_byte_has_left() -> None:
    """The bug: everything handed to the channel showed as sent, 100 % while
    megabytes were still buffered."""
    shown = Recorder()
    d = Departures(shown)
    d.file("a.bin", 10_000_000, 0)
    d.handed(10_000_000, 10_000_000)
    d.left(4_000_000)
    assert shown.shown == 6_000_000
    d.handed_all()
    assert shown.calls == [("start", "a.bin")]  # not finished: 4 MB still here
    d.left(1_000_000)
    assert shown.shown == 9_000_000
    d.all_acknowledged()
    assert shown.shown == 10_000_000
    assert shown.calls[-1] == ("finish", 10_000_000)


def test_the_next_file_starts_when_the_last_ones_bytes_have_left() -> None:
    shown = Recorder()
    d = Departures(shown)
    d.file("a", 100, 0)
    d.handed(100, 100)
    d.handed_all()
    d.file("b", 50, 0)
    d.handed(50, 50)
    d.left(120)  # 30 of a's bytes have left, none of b's
    assert shown.calls == [("start", "a")]
    assert shown.shown == 30
    d.left(40)  # all of a, 10 of b
    assert shown.calls == [("start", "a"), ("finish", 100), ("start", "b")]
    assert shown.shown == 110
    d.left(60)  # the buffer never shows what left as back
    assert shown.shown == 110
    d.handed_all()
    d.all_acknowledged()
    assert shown.calls[-1] == ("finish", 150)


def test_resumed_bytes_count_at_once_and_compression_is_scaled() -> None:
    shown = Recorder()
    d = Departures(shown)
    d.file("a", 1000, 600)
    assert shown.shown == 600
    d.handed(400, 100)  # compressed 4:1
    d.left(50)  # half the wire bytes: half the plain bytes
    assert shown.shown == 800
    d.handed_all()
    d.left(0)
    assert shown.calls == [("start", "a"), ("finish", 1000)]


def test_close_takes_down_a_file_still_shown() -> None:
    shown = Recorder()
    d = Departures(shown)
    d.file("a", 100, 0)
    d.handed(100, 100)
    d.close()
    assert shown.calls == [("start", "a"), ("finish", 0)]
    d.close()
    assert shown.calls.count(("finish", 0)) == 1
