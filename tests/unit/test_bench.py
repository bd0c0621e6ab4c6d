"""scripts/bench's own arithmetic and drawing: the table, the ratios against the
goals, the single-core limit and the plot (the measurements themselves are the
bench's job, not the tests')."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from benchmarks.bench import (
    AUTO,
    DATACHANNEL,
    MIB,
    RAW,
    TCP,
    WORMHOLE,
    Limits,
    Sample,
    Usage,
    data_seconds,
    micro_limits,
    plot,
    ratios,
    table,
)


def sample(mib_per_s: float, first: float | None = None, note: str = "") -> Sample:
    usage = Usage(0, 100.0, 2.0)
    series = [(t / 10, int(t / 10 * mib_per_s * MIB)) for t in range(30)]
    return Sample(mib_per_s, 10.0, first, {"sender": usage, "receiver": usage}, series, note)


RESULTS = {
    AUTO: [sample(600, 0.5, "TCP"), sample(650, 0.6, "TCP"), sample(500, 0.4, "TCP")],
    TCP: [sample(640, 0.5, "TCP")],
    DATACHANNEL: [sample(26, 0.55, "WebRTC, 1 stream(s)")],
    RAW: [sample(27)],
    WORMHOLE: [sample(160)],
}


def test_the_single_core_limit_adds_up_the_time_per_byte() -> None:
    limits = Limits(aes_gcm=8000, sha256=1600, tcp=4000)
    assert limits.single_core == pytest.approx(1 / (1 / 8000 + 1 / 1600 + 1 / 4000))


def test_the_table_shows_medians_and_every_run() -> None:
    rows = table(RESULTS)
    auto = next(row for row in rows if row.startswith(f"| {AUTO} |"))
    assert "| 600.0 |" in auto
    assert "0.50 s" in auto
    assert "600.0, 650.0, 500.0" in auto
    raw = next(row for row in rows if row.startswith(f"| {RAW} |"))
    assert "| – s |" in raw  # no first byte measured
    assert len(rows) == 2 + len(RESULTS)


def test_the_ratios_say_whether_each_goal_is_met() -> None:
    lines = ratios(RESULTS, Limits(aes_gcm=8000, sha256=1600, tcp=4000))
    text = "\n".join(lines)
    assert "sfs auto / magic-wormhole: 3.75 (goal ≥ 1.5: met)" in text
    assert "sfs datachannel / raw aiortc: 0.96 (goal ≥ 1.5: NOT met)" in text
    assert "single-core limit: 0.60 (goal ≥ 0.5: met)" in text  # 600 of 1000
    slow = {**RESULTS, DATACHANNEL: [sample(20, 1.2)]}
    text = "\n".join(ratios(slow, None))
    assert "0.74 (goal ≥ 1.5: NOT met)" in text
    long_link = "\n".join(ratios({**RESULTS, DATACHANNEL: [sample(80, 0.9)]}, None, long_link=True))
    assert "sfs datachannel / raw aiortc: 2.96 (goal ≥ 3.0: NOT met)" in long_link
    assert "sfs datachannel, MiB/s: 80.00 (goal ≥ 30.0: met)" in long_link
    slow_link = "\n".join(ratios(slow, None, long_link=True))
    assert f"first byte, {DATACHANNEL}: 1.20 s (goal ≤ 1.0 s: NOT met)" in slow_link
    assert "first byte" not in text  # the goal is the long link's
    assert "single-core" not in text  # no limits (a namespace run): no such line


def test_the_plot_is_a_picture(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    plot(RESULTS, path, "test")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert path.stat().st_size > 10_000


def test_micro_limits_are_measured_here() -> None:
    limits = micro_limits(65_508, seconds=0.05)
    for value in (limits.aes_gcm, limits.sha256, limits.tcp):
        assert math.isfinite(value)
        assert value > 10


def test_a_data_phase_is_first_byte_to_last() -> None:
    series = [(0.1, 0), (0.2, 0), (0.3, 10), (0.4, 60), (0.5, 100), (0.6, 100)]
    assert data_seconds(series, 100) == pytest.approx(0.3)
    assert data_seconds(series, 200) is None  # never all there
    assert data_seconds([], 100) is None


def test_startup_times_every_command_that_must_answer_at_once() -> None:
    from benchmarks.bench import STARTUP_COMMANDS, startup_times

    lines = startup_times(1)
    assert len(lines) == 2 + len(STARTUP_COMMANDS)
    assert "sfs --version" in lines[2]
    for line in lines[1:]:
        median, slowest = re.findall(r"(\d+) ms", line)
        assert 0 < int(median) <= int(slowest)


def test_the_tree_bench_expects_hidden_names_inside_the_folder_kept() -> None:
    from benchmarks.tree import as_received

    sent = {".gitignore": "a", ".ci/run": "b", "src/x.py": "c"}
    assert as_received(sent) == sent
