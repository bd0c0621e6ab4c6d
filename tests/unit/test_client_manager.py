"""The signaling server's Socket.IO client manager: disconnects in O(1), same bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
import socketio

from sfs.signal.memory_registry import _ClientManager


def _server(manager: Any) -> Any:
    # A real AsyncServer binds the manager to its engine.io ID generator; no app needed.
    return socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)


@pytest.mark.parametrize("manager_class", [socketio.AsyncManager, _ClientManager])
async def test_disconnect_leaves_nothing_behind(manager_class: type[Any]) -> None:
    """Ours must leave the same state as python-socketio's own manager."""
    manager = manager_class()
    _server(manager)
    sids = [await manager.connect(f"eio{i}", "/") for i in range(3)]
    manager.callbacks[sids[0]] = {1: print}
    await manager.disconnect(sids[0], "/")
    rooms = manager.rooms["/"]
    assert set(rooms) == {None, sids[1], sids[2]}
    assert sids[0] not in rooms[None]
    assert sids[0] not in manager.callbacks
    assert manager.is_connected(sids[1], "/")
    assert manager.sid_from_eio_sid("eio1", "/") == sids[1]
    pending = await manager.pre_connect("eio9", "/")
    for sid in (*sids[1:], pending):
        await manager.disconnect(sid, "/")
    assert manager.rooms == {}
    assert manager.callbacks == {}
    assert manager.pending_connect == {}
    assert manager.pending_disconnect == {}


async def test_refuses_rooms_it_would_not_leave() -> None:
    manager = _ClientManager()
    _server(manager)
    sid = await manager.connect("eio0", "/")
    with pytest.raises(ValueError, match="no rooms"):
        await manager.enter_room(sid, "/", "lobby")
