"""The insides of other packages that sfs patches or relies on still have the shape it
expects, and a shape that changed is never patched blindly (issue 22 item 9).

pyproject.toml bounds these packages to the versions tested (scripts/test runs the
unit tests with the newest and with the oldest allowed); these tests fail first when
a new version moves something sfs reaches into.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aioice.ice
import click
import pytest
import socketio
from aiortc import RTCSctpTransport

from sfs.errors import PeerConnectionError
from sfs.peer.transport import gathering, sctp_window, webrtc
from sfs.signal.memory_registry import _ClientManager


def _fake_dtls() -> Any:
    return types.SimpleNamespace(
        state="new", transport=None, _register_data_receiver=lambda *args: None
    )


class FakeChannel:
    """The part of aiortc's RTCDataChannel that DataChannelLink touches, on a real
    (never started) aiortc SCTP transport."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.bufferedAmountLowThreshold = 0
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler


# -- aiortc: the SCTP receive window and delayed SACKs -----------------------------------------


def test_aiortc_sctp_has_what_the_receive_window_patches() -> None:
    assert sctp_window.sctp_problem() is None
    assert sctp_window.sctp_internals_fit()


async def test_a_real_transport_has_the_attributes_and_gets_the_patch() -> None:
    transport = RTCSctpTransport(_fake_dtls())
    for name in sctp_window._SCTP_ATTRIBUTES:
        assert hasattr(transport, name), name
    assert transport._advertised_rwnd == 1024 * 1024  # aiortc's own, before sfs
    link = webrtc.DataChannelLink(FakeChannel(transport), max_message_size=65536)
    assert link._window is not None
    # Replaced on this instance only, never on aiortc's class.
    assert "_receive_data_chunk" in vars(transport)
    assert "_send_sack" in vars(transport)
    assert "_receive_data_chunk" not in vars(RTCSctpTransport) or inspect.iscoroutinefunction(
        RTCSctpTransport._receive_data_chunk
    )
    assert transport._advertised_rwnd == webrtc.RECEIVE_WINDOW_BYTES


def _changed(**changes: Any) -> type:
    """aiortc's transport class with ``changes`` (None removes a method)."""
    namespace = {k: v for k, v in vars(RTCSctpTransport).items() if k not in changes}
    namespace.update({k: v for k, v in changes.items() if v is not None})
    return type("RTCSctpTransport", (), namespace)


async def _renamed_chunk_handler(self: Any, chunk: Any) -> None:
    await self._handle_data_chunk(chunk)


async def _two_arguments(self: Any, chunk: Any, now: float) -> None:
    pass


def _not_a_coroutine(self: Any) -> None:
    pass


def _init_without_window(self: Any) -> None:
    self._inbound_streams = {}


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"_receive_data_chunk": None}, "_receive_data_chunk(chunk) is not there"),
        ({"_receive_data_chunk": _two_arguments}, "_receive_data_chunk(chunk) is not there"),
        ({"_send_sack": _not_a_coroutine}, "_send_sack() is not there"),
        ({"_receive_chunk": _renamed_chunk_handler}, "no longer calls _receive_data_chunk"),
        ({"_abort": None}, "_abort is not there"),
        ({"__init__": _init_without_window}, "has no _advertised_rwnd"),
    ],
)
def test_a_changed_sctp_shape_is_named(changes: dict[str, Any], says: str) -> None:
    problem = sctp_window.sctp_problem(_changed(**changes))
    assert problem is not None
    assert says in problem


def test_a_changed_stream_or_chunk_shape_is_named() -> None:
    class Stream:
        def __init__(self) -> None:
            self.chunks: list[Any] = []

    class Chunk:
        def __init__(self) -> None:
            self.tsn = self.flags = self.stream_id = 0
            self.payload = b""

    assert "reassembly" in (sctp_window.sctp_problem(stream=Stream) or "")
    assert sctp_window.sctp_problem(chunk=Chunk) == "DataChunk has no user_data"


async def test_a_changed_shape_keeps_aiortcs_own_behaviour_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Never a patch over something else: nothing on the transport is replaced, and
    the warning says why, once per process."""
    monkeypatch.setattr(sctp_window, "sctp_problem", lambda: "RTCSctpTransport has no _x")
    sctp_window.sctp_internals_fit.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="sfs.peer.transport.sctp_window"):
            for _ in range(2):
                transport = RTCSctpTransport(_fake_dtls())
                link = webrtc.DataChannelLink(FakeChannel(transport), max_message_size=65536)
                assert link._window is None
                assert "_receive_data_chunk" not in vars(transport)
                assert "_send_sack" not in vars(transport)
                assert transport._advertised_rwnd == 1024 * 1024  # aiortc's own
                link._on_message(b"x" * 100)  # and the link still works
                assert await asyncio.wait_for(link.receive(), 1) == b"x" * 100
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "RTCSctpTransport has no _x" in warnings[0].getMessage()
        assert "aiortc's own" in warnings[0].getMessage()
    finally:
        sctp_window.sctp_internals_fit.cache_clear()


# -- aioice: host addresses and gathering ---------------------------------------------------------


def test_aioice_has_what_sfs_gathers_with() -> None:
    assert gathering.aioice_problem() is None
    # Patched: aioice asks sfs's function for the host addresses.
    assert aioice.ice.get_host_addresses is gathering._get_host_addresses


def test_a_changed_aioice_shape_is_named() -> None:
    def get_host_addresses(families: Any) -> list[str]:
        return []

    ice = types.SimpleNamespace(**vars(aioice.ice))
    ice.get_host_addresses = get_host_addresses
    assert "get_host_addresses(use_ipv4, use_ipv6)" in (gathering.aioice_problem(ice) or "")

    class Connection(aioice.ice.Connection):
        async def gather_candidates(self) -> None:
            pass

    ice = types.SimpleNamespace(**{**vars(aioice.ice), "Connection": Connection})
    assert "no longer asks get_host_addresses" in (gathering.aioice_problem(ice) or "")


def test_with_a_changed_aioice_ice_address_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gathering, "AIOICE_PROBLEM", "Connection has no _protocols")
    with (
        pytest.raises(PeerConnectionError, match="Connection has no _protocols"),
        gathering.gathering_on(("127.0.0.1",)),
    ):
        pass
    with gathering.gathering_on(()):  # no restriction asked: nothing patched is used
        pass


# -- python-socketio, python-engineio, click ------------------------------------------------------


def test_socketio_manager_has_the_state_own_rooms_only_keeps() -> None:
    """OwnRoomsOnly.basic_disconnect redoes python-socketio's, on its attributes."""
    manager = socketio.AsyncManager()
    for name in ("rooms", "callbacks", "pending_connect", "pending_disconnect"):
        assert isinstance(getattr(manager, name), dict), name
    for name in ("basic_disconnect", "basic_enter_room", "basic_leave_room"):
        assert callable(getattr(socketio.AsyncManager, name)), name
    assert list(inspect.signature(socketio.AsyncManager.basic_enter_room).parameters) == [
        "self",
        "sid",
        "namespace",
        "room",
        "eio_sid",
    ]
    assert issubclass(_ClientManager, socketio.AsyncManager)


def test_engineio_server_has_what_the_signal_server_meters() -> None:
    """sfs/signal/server.py wraps engineio's handlers and queue and reads its sockets."""
    server = socketio.AsyncServer(async_mode="aiohttp")
    for event in ("connect", "message", "disconnect"):
        assert callable(server.eio.handlers[event]), event
    assert isinstance(server.eio.sockets, dict)
    assert callable(server.eio.create_queue)
    assert callable(server.manager.eio_sid_from_sid)


def test_click_has_what_settings_use() -> None:
    from click.core import ParameterSource

    assert ParameterSource.DEFAULT_MAP
    assert ParameterSource.ENVIRONMENT
    option = click.Option(["--x"], envvar="SFS_X", type=click.FloatRange(0))
    assert callable(option.process_value)
    assert callable(option.get_default)
    assert callable(click.FloatRange(0).split_envvar_value)


# -- the bounds themselves ----------------------------------------------------------------------


def _bounds() -> dict[str, str]:
    import tomllib

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for requirement in requirements:
        name = requirement.split(">", 1)[0].split("=", 1)[0].split(";", 1)[0].strip()
        found[name] = requirement
    return found


@pytest.mark.parametrize(
    "name", ["aiortc", "aioice", "click", "python-socketio", "python-engineio", "aiohttp"]
)
def test_what_sfs_reaches_into_is_bounded_above_and_installed_within(name: str) -> None:
    from packaging.requirements import Requirement

    requirement = Requirement(_bounds()[name])
    assert any(spec.operator == "<" for spec in requirement.specifier), requirement
    assert any(spec.operator == ">=" for spec in requirement.specifier), requirement
    assert requirement.specifier.contains(version(name)), (requirement, version(name))


def test_qh3_and_aioice_have_what_quic_on_the_webrtc_path_uses() -> None:
    """sfs.peer.transport.quic drives qh3's sans-I/O connection and takes datagrams
    from aioice's Connection; pyproject.toml bounds qh3 below 3."""
    from qh3._hazmat import Buffer
    from qh3.quic import events
    from qh3.quic.connection import QuicConnection, QuicConnectionError
    from qh3.quic.packet import QuicPacketType, pull_quic_header

    for name in (
        "connect",
        "receive_datagram",
        "datagrams_to_send",
        "get_timer",
        "handle_timer",
        "next_event",
        "send_stream_data",
        "get_send_buffer_size",
        "get_next_available_stream_id",
        "send_ping",
        "close",
    ):
        assert callable(getattr(QuicConnection, name, None)), name
    for event in ("StreamDataReceived", "HandshakeCompleted", "ConnectionTerminated",
                  "PingAcknowledged"):  # fmt: skip
        assert isinstance(getattr(events, event, None), type), event
    assert issubclass(QuicConnectionError, Exception)
    assert QuicPacketType.INITIAL is not None
    assert callable(pull_quic_header)
    assert callable(Buffer)
    assert "data_received" in vars(aioice.ice.Connection)
    assert "_nominated" in inspect.getsource(aioice.ice.Connection.__init__)
    assert int(version("qh3").split(".")[0]) == 2
