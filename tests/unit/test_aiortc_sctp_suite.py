"""aiortc's own SCTP tests, run with sfs's patches on every transport they create.

sfs patches aiortc's SCTP per transport instance (:mod:`sfs.peer.transport.sctp_window`;
``DataChannelLink`` applies it when a channel opens). aiortc's ``tests/
test_rtcsctptransport.py`` (about 105 cases, all passing on stock aiortc) knows that
transport best: here its test classes run with ``RTCSctpTransport.__init__`` wrapped,
for each case only, so that every transport they make is patched exactly as
``DataChannelLink`` patches a real one (a real ``DataChannelLink`` over a stand-in
channel whose ``transport`` is the new transport). The patch comes at construction,
earlier than in sfs (when the channel opens), so it sees every chunk.

A case that fails under the patches must be in :data:`EXPECTED_FAILURES` with why: a
change of behaviour sfs means to make. Those run as strict xfails (one that passes
fails the run, so the list cannot rot), every name in the list must be a case of the
installed aiortc's suite, and every other case must pass.

The suite is fetched by package name for the installed aiortc version
(:mod:`tests.aiortc_suite`; ``scripts/test`` does it first).
"""

from __future__ import annotations

import functools
import inspect
import unittest
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiortc import RTCSctpTransport

from sfs.peer.transport import sctp_window
from sfs.peer.transport.sctp_congestion import congestion_internals_fit
from sfs.peer.transport.webrtc import DataChannelLink
from tests.aiortc_suite import installed_aiortc, load_sctp_tests

_NEVER_STARTED = (
    "the case hands DATA chunks to a transport it never started, whose association "
    "state is CLOSED; sfs drops every DATA chunk on a CLOSED association "
    "(ReceiveWindow._receive_data_chunk: once it or the peer aborted, the rest of the "
    "packet goes unprocessed), where aiortc processes it. sfs patches a transport only "
    "once its channel is open, so no sfs link sees this difference; with that one check "
    "taken out the case passes, through sfs's receive path"
)
_PEER_WINDOW = (
    "sfs keeps what is in flight within the peer's advertised receive window (RFC 9260 "
    "section 6.1 rule A; sctp_congestion.CongestionControl._window), where aiortc ignores "
    "it; the case's SACKs advertise a window of 0 (SackChunk's default), so sfs sends no "
    "new DATA while anything is in flight, and with nothing in flight only one probe chunk"
)
_SLOW_START = (
    "sfs's slow start grows the window by up to two chunks per SACK (RFC 3465's L = 2, "
    "sctp_congestion.Cubic; sfs's receiver acknowledges every second packet), where "
    "aiortc grows it by one, so the window the case asserts is one chunk larger"
)
#: "Class.method" of aiortc's suite -> why it fails under sfs's patches (a behaviour
#: sfs changes on purpose). Nothing else may fail; each of these must.
EXPECTED_FAILURES: dict[str, str] = {
    "RTCSctpTransportTest.test_receive_data": _NEVER_STARTED,
    "RTCSctpTransportTest.test_receive_data_out_of_order": _NEVER_STARTED,
    "RTCSctpTransportTest.test_receive_forward_tsn": _NEVER_STARTED,
    "RTCSctpTransportTest.test_receive_forward_tsn_message_in_progress": _NEVER_STARTED,
    "RTCSctpTransportTest.test_receive_forward_tsn_stale_stream": _NEVER_STARTED,
    "RTCSctpTransportTest.test_receive_sack_abandoned_queued_fragments": _PEER_WINDOW,
    "RTCSctpTransportTest.test_receive_sack_gap_acked_after_retransmit": _PEER_WINDOW,
    "RTCSctpTransportTest.test_send_data_with_gap_2_retransmit": _PEER_WINDOW,
    "RTCSctpTransportTest.test_send_data_congestion_control": _SLOW_START,
    "RTCSctpTransportTest.test_send_data_slow_start": _SLOW_START,
    "RTCSctpTransportTest.test_send_data_with_gap": _SLOW_START,
    "RTCSctpTransportTest.test_send_data_with_gap_1_retransmit": _SLOW_START,
    "RTCSctpTransportTest.test_send_data_with_gap_3_retransmit": _SLOW_START,
    "RTCSctpTransportTest.test_send_sack": (
        "delayed SACKs (RFC 9260 section 6.2; ReceiveWindow._send_sack): with nothing "
        "new to report, a SACK waits for a second packet or SACK_DELAY_SECONDS, where "
        "aiortc sends one at once, and the case looks for it straight after the call"
    ),
}


class _StandInChannel:
    """What DataChannelLink touches of an aiortc RTCDataChannel, around ``transport``:
    it only needs the transport to patch it."""

    readyState = "open"
    bufferedAmount = 0

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.bufferedAmountLowThreshold = 0

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        """Nothing ever fires: aiortc's tests make their own channels."""


def _replaced_methods(transport: Any) -> set[str]:
    """Methods of aiortc's class that the instance has replaced."""
    cls = type(transport)
    return {n for n in vars(transport) if inspect.isfunction(getattr(cls, n, None))}


def patch_like_sfs(transport: Any) -> None:
    """Patch one transport as sfs does when a DataChannel opens on it."""
    link = DataChannelLink(
        _StandInChannel(transport),
        max_message_size=RTCSctpTransport.getCapabilities().maxMessageSize,
    )
    # The link keeps what it patched alive through the transport (ReceiveWindow
    # stores itself there); keep the link too, so nothing is collected early.
    transport._sfs_guard_link = link
    if not _replaced_methods(transport):
        raise AssertionError("DataChannelLink patched nothing on this RTCSctpTransport")


@pytest.fixture(autouse=True)
def _sfs_patches_on_every_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    # First, with aiortc's own __init__ in place: sctp_internals_fit() inspects it
    # (and caches the answer for the whole process).
    assert sctp_window.sctp_internals_fit(), sctp_window.sctp_problem()
    assert congestion_internals_fit(), "sctp_congestion does not fit the installed aiortc"
    aiortc_init = RTCSctpTransport.__init__

    @functools.wraps(aiortc_init)
    def patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
        aiortc_init(self, *args, **kwargs)
        patch_like_sfs(self)

    # monkeypatch puts aiortc's own __init__ back after each case.
    monkeypatch.setattr(RTCSctpTransport, "__init__", patched_init)


_UPSTREAM = load_sctp_tests()


def _upstream_classes() -> dict[str, type[unittest.TestCase]]:
    return {
        name: value
        for name, value in vars(_UPSTREAM).items()
        if isinstance(value, type)
        and issubclass(value, unittest.TestCase)
        and value.__module__ == _UPSTREAM.__name__
    }


def _case_names(cls: type[unittest.TestCase]) -> list[str]:
    return list(unittest.TestLoader().getTestCaseNames(cls))


def _expected_to_fail(method: Callable[..., Any], reason: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def case(self: unittest.TestCase) -> None:
        method(self)

    marked: Callable[..., Any] = pytest.mark.xfail(reason=reason, strict=True)(case)
    return marked


def _guarded(cls: type[unittest.TestCase]) -> type[unittest.TestCase]:
    """A subclass of one of aiortc's test classes, collected here under its name, with
    the expected failures marked (aiortc's own class is left as it is)."""
    overrides: dict[str, Any] = {"__module__": __name__, "__qualname__": cls.__name__}
    for name in _case_names(cls):
        reason = EXPECTED_FAILURES.get(f"{cls.__name__}.{name}")
        if reason is not None:
            overrides[name] = _expected_to_fail(getattr(cls, name), reason)
    return type(cls.__name__, (cls,), overrides)


for _name, _cls in _upstream_classes().items():
    globals()[_name] = _guarded(_cls)
del _name, _cls


def test_the_expected_failures_are_cases_of_this_aiortc() -> None:
    cases = {
        f"{name}.{case}" for name, cls in _upstream_classes().items() for case in _case_names(cls)
    }
    assert len(cases) > 0, f"aiortc {installed_aiortc()}'s SCTP suite has no cases"
    assert set(EXPECTED_FAILURES) <= cases, set(EXPECTED_FAILURES) - cases


async def test_the_patch_is_applied_to_transports_made_here() -> None:
    """The wrapper really patches (a suite that ran on stock transports would prove
    nothing), and the fixture put aiortc's __init__ back when it is gone."""
    transport: Any = RTCSctpTransport(cast(Any, _StandInDtls()))
    assert _replaced_methods(transport)
    assert isinstance(transport._sfs_guard_link, DataChannelLink)


class _StandInDtls:
    """Enough of an RTCDtlsTransport for RTCSctpTransport's constructor."""

    state = "new"
    transport = None

    def _register_data_receiver(self, *args: Any) -> None:
        pass
