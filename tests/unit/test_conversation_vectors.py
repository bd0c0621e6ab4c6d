"""The conversation scripts of ``vectors.json`` (written in :mod:`tests.web_vectors`),
run against the Python machine (:mod:`sfs.peer.proto.conversation`); the page's
``sfs/web/test/conversation.test.mjs`` runs the same scripts against ``conversation.js``.

Each script drives one side's machine, created at time 0, with a peer
:class:`~sfs.peer.proto.framing.TransferProtocol` of the other role: the peer seals
each frame input, and opens every frame the machine queues, so what is compared is
events, as the scripts write them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sfs import errors
from sfs.errors import SfsError
from sfs.peer.proto import conversation, reasons
from sfs.peer.proto.conversation import Conversation, Receiver, Sender
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.wire import Chunk, FileInfo, Offer
from tests.helpers import key_pair
from tests.web_vectors import VECTORS_PATH, _describe

_VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["conversations"]


def _offer(d: dict[str, Any]) -> Offer:
    return Offer(
        files=tuple(
            FileInfo(
                f["name"], f["size"], int(f["mtime_ns"]), tuple(f["folder"]), f["x"], f["stream"]
            )
            for f in d["files"]
        ),
        sender=d["sender"],
        chunk_size=d["chunk_size"],
        folders=tuple(tuple(folder) for folder in d["folders"]),
        text=d["text"],
    )


def _unrows(d: dict[str, Any], fill: Any) -> list[Any]:
    out = [fill] * d["length"]
    for i, value in d["rows"]:
        out[i] = value
    return out


def _event(d: dict[str, Any]) -> Any:
    """The Python event for a description (the inverse of :func:`_describe`)."""
    from sfs.peer.proto import wire

    kind = d["type"]
    if kind == "Offer":
        return _offer(d)
    if kind == "Accept":
        return wire.Accept(tuple(_unrows(d["held"], 0)) if d["held"]["rows"] else (), d["zstd"])
    if kind == "Resume":
        digests = (
            tuple(bytes.fromhex(h) for h in _unrows(d["sha256"], ""))
            if d["sha256"]["length"]
            else ()
        )
        return wire.Resume(tuple(_unrows(d["offsets"], 0)), digests)
    if kind == "Start":
        return wire.Start(tuple(_unrows(d["offsets"], 0)))
    if kind in ("Reject", "Cancel"):
        return getattr(wire, kind)(d["reason"], d.get("code", ""))
    if kind == "Chunk":
        return Chunk(bytes.fromhex(d["data"]))
    if kind == "FileDone":
        return wire.FileDone(bytes.fromhex(d["sha256"]))
    if kind == "FileAck":
        return wire.FileAck(d["count"])
    if kind == "Ping":
        return wire.Ping()
    raise AssertionError(f"no event {kind}")


def _action(action: Any) -> Any:
    """An action as the scripts write it."""
    if action is None:
        return None
    kind = type(action).__name__
    if isinstance(action, conversation.AskUser):
        return {"kind": kind, "offer": _describe(action.offer)}
    if isinstance(action, conversation.HashPrefixes):
        return {"kind": kind, "held": list(action.held)}
    if isinstance(action, conversation.ConfirmPrefixes):
        return {"kind": kind, "resume": _describe(action.resume)}
    if isinstance(action, conversation.SendFiles):
        return {"kind": kind, "offsets": list(action.offsets), "restarted": list(action.restarted)}
    if isinstance(action, conversation.Acknowledged):
        return {"kind": kind, "count": action.count, "done": action.done}
    described = _describe(action)  # a received Chunk or FileDone
    return {"kind": described.pop("type"), **described}


def _call(machine: Conversation, name: str, args: dict[str, Any], at: float) -> Any:
    if name == "offer":
        assert isinstance(machine, Sender)
        return machine.offer(_offer(args["offer"]))
    if name == "prefixes_hashed":
        assert isinstance(machine, Sender)
        digests = tuple(bytes.fromhex(h) for h in args["digests"])
        return machine.prefixes_hashed(tuple(args["offsets"]), digests)
    if name == "send_chunk":
        assert isinstance(machine, Sender)
        return machine.send_chunk(Chunk(bytes.fromhex(args["data"])), at)
    if name == "file_done":
        assert isinstance(machine, Sender)
        return machine.file_done(bytes.fromhex(args["sha256"]))
    if name == "accept":
        assert isinstance(machine, Receiver)
        return machine.accept(tuple(args["held"]), args["zstd"])
    if name == "refuse":
        assert isinstance(machine, Receiver)
        return machine.refuse(reasons.reject(args["code"]))
    if name == "prefixes_confirmed":
        assert isinstance(machine, Receiver)
        return machine.prefixes_confirmed(tuple(args["offsets"]))
    if name == "files_placed":
        assert isinstance(machine, Receiver)
        return machine.files_placed(args["count"])
    if name == "abort":
        return machine.abort(getattr(errors, args["error"])())
    raise AssertionError(f"no call {name}")


def run_script(script: dict[str, Any]) -> None:
    """Drive one script through a fresh machine, asserting every step."""
    keys_s, keys_r = key_pair()
    sender_side = script["side"] == "sender"
    proto = TransferProtocol(
        Role.SENDER if sender_side else Role.RECEIVER, keys_s if sender_side else keys_r
    )
    peer = TransferProtocol(
        Role.RECEIVER if sender_side else Role.SENDER, keys_r if sender_side else keys_s
    )
    machine: Conversation = Sender(proto, 0.0) if sender_side else Receiver(proto, 0.0)
    for index, step in enumerate(script["steps"]):
        where = f"{script['name']}, step {index}: {step['input']}"
        at, given = step["at"], step["input"]
        action: Any = None
        returned: Any = None
        raised: SfsError | None = None
        try:
            if "frame" in given:
                frames = peer.send_frames(_event(given["frame"]))
                assert len(frames) == 1, where  # a script's frame input is one frame
                action = machine.frame_received(frames[0], at)
            elif "timer" in given:
                machine.handle_timer(at)
            elif "heard" in given:
                machine.heard(at)
            else:
                returned = _call(machine, given["call"], given["args"], at)
        except SfsError as exc:
            raised = exc
        if raised is not None:
            assert "error" in step, f"{where}: raised {raised!r}"
            assert type(raised).__name__ == step["error"]["kind"], where
            assert reasons.cancel_code(raised) == step["error"]["code"], where
            continue
        assert "error" not in step, f"{where}: expected {step['error']}"
        if isinstance(returned, bytes):  # send_chunk's frame
            returned = _describe(peer.receive(returned))
        elif returned is not None and not isinstance(returned, bool):
            action, returned = returned, None  # prefixes_hashed's SendFiles
        if "returned" in step:
            assert returned == step["returned"], where
        assert _action(action) == step.get("action"), where
        sent = [_describe(peer.receive(frame)) for frame in machine.frames_to_send(at)]
        assert sent == step["sent"], where
        assert machine.next_deadline() == step["deadline"], where


def test_the_scripts_cover_the_timers() -> None:
    assert _VECTORS["ping_interval_seconds"] == conversation.PING_INTERVAL_SECONDS
    assert _VECTORS["idle_timeout_seconds"] == conversation.IDLE_TIMEOUT_SECONDS
    assert len(_VECTORS["scripts"]) >= 7


@pytest.mark.parametrize("script", _VECTORS["scripts"], ids=lambda s: s["name"])
def test_python_machine_follows_the_script(script: dict[str, Any]) -> None:
    run_script(script)
