"""The set-up scripts of ``vectors.json`` (written in :mod:`tests.web_vectors`), run
against the Python machine (:mod:`sfs.peer.proto.handshake`); the page's
``sfs/web/test/handshake_vectors.test.mjs`` runs the same scripts against
``handshake.js``.

The scripts are written by hand, at the event level.  The other side is played here
with the crypto primitives, not with a second Handshake: a
:class:`~sfs.peer.proto.crypto.KeyExchange` of the other role on the script's
``peer.words`` and ``peer.code_id``, finished with the machine's own
``send_public_key``.  It supplies the SPAKE2 message of a ``key_from_peer`` input,
seals each ``seal`` (a JSON value) or ``seal_text`` input, and opens every offer or
answer the machine sends, so what is compared is plaintexts and events; the SPAKE2
scalars and nonces stay random (the byte-exact crypto is the ``exchanges`` and
``signals`` vectors' job)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sfs.code import Code
from sfs.errors import WrongCodeError
from sfs.peer.proto import handshake
from sfs.peer.proto.crypto import KeyExchange, SessionKeys, open_message, seal_message
from sfs.peer.proto.framing import Role
from sfs.signal.messages import IceServer
from tests.web_vectors import VECTORS_PATH

_VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["handshakes"]
_KEY = "spake2-message"
_MATCH = "the peer's"


def _ice(servers: list[dict[str, Any]]) -> tuple[IceServer, ...]:
    return tuple(
        IceServer(tuple(s["urls"]), s.get("username"), s.get("credential")) for s in servers
    )


def _described_ice(servers: tuple[IceServer, ...]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.to_dict().items() if v is not None} for s in servers]


class _Peer:
    """The other side: its SPAKE2 half, and the keys once the machine's message came."""

    def __init__(self, script: dict[str, Any]) -> None:
        side = Role(script["side"])
        other = Role.RECEIVER if side is Role.SENDER else Role.SENDER
        waits = "code" not in script
        self.exchange = KeyExchange(
            role=other.value,
            password=script["peer"]["words"].encode(),
            code_id=script["peer"]["code_id"],
            printed_by=(side if waits else other).value,
        )
        self.message = base64.b64encode(self.exchange.message).decode("ascii")
        self.keys: SessionKeys | None = None

    def seal(self, kind: str, plaintext: bytes) -> str:
        assert self.keys is not None, "the script seals before the machine sent its key"
        sealed = seal_message(key=self.keys.signal_send, kind=kind, plaintext=plaintext)
        return base64.b64encode(sealed).decode("ascii")


def _event(given: dict[str, Any], peer: _Peer) -> handshake.SetupEvent:
    name = given["event"]
    if name == "Registered":
        return handshake.Registered(given["peer_id"], _ice(given.get("ice_servers", [])))
    if name == "PublicKeyReceived":
        key = peer.message if given.get("key_from_peer") else given["key"]
        return handshake.PublicKeyReceived(given["peer_id"], key)
    if name == "SealedReceived":
        if "seal" in given:
            text = json.dumps(given["seal"], separators=(",", ":"), ensure_ascii=False)
        else:
            text = given["seal_text"]
        sealed = peer.seal(given["kind"], text.encode("utf-8"))
        return handshake.SealedReceived(given["peer_id"], given["kind"], sealed)
    if name == "LocalDescription":
        return handshake.LocalDescription(tuple(given["sdps"]))
    if name == "PartnerAborted":
        return handshake.PartnerAborted(given["peer_id"], given["reason"])
    cls = getattr(handshake, name)
    return cls(given["peer_id"]) if "peer_id" in given else cls()  # type: ignore[no-any-return]


def _mirrored(keys: SessionKeys, peer: SessionKeys | None) -> bool:
    return peer is not None and (
        keys.signal_send == peer.signal_receive
        and keys.signal_receive == peer.signal_send
        and keys.frame_send == peer.frame_receive
        and keys.frame_receive == peer.frame_send
        and keys.verifier == peer.verifier
    )


def _describe(action: handshake.Action, peer: _Peer) -> dict[str, Any]:
    """An action as the scripts write it (the peer finishes its keys on the way)."""
    kind = type(action).__name__
    if isinstance(action, handshake.Call):
        payload: dict[str, Any] = dict(action.payload)
        if action.event == "send_public_key":
            message = base64.b64decode(payload["key"], validate=True)
            assert len(message) == 33
            peer.keys = peer.exchange.finish(message)
            payload["key"] = _KEY
        if action.event in ("offer", "answer"):
            assert peer.keys is not None
            try:
                plaintext = open_message(
                    key=peer.keys.signal_receive,
                    kind=action.event,
                    sealed=base64.b64decode(payload["sealed"], validate=True),
                )
                payload["sealed"] = json.loads(plaintext)
            except WrongCodeError:
                payload["sealed"] = "does not open"
        return {
            "kind": kind,
            "event": action.event,
            "payload": payload,
            "best_effort": action.best_effort,
        }
    if isinstance(action, handshake.ShowCode):
        return {"kind": kind, "code": action.code}
    if isinstance(action, handshake.Status):
        return {"kind": kind, "message": action.message}
    if isinstance(action, handshake.CreateOffers):
        return {
            "kind": kind,
            "count": action.count,
            "ice_servers": _described_ice(action.ice_servers),
        }
    if isinstance(action, handshake.AnswerOffers):
        # The page takes no part in the direct TCP path: the scripts never offer it.
        assert action.tcp is None
        return {
            "kind": kind,
            "sdps": list(action.sdps),
            "ice_servers": _described_ice(action.ice_servers),
        }
    if isinstance(action, handshake.AcceptAnswers):
        assert action.tcp is None
        return {"kind": kind, "sdps": list(action.sdps)}
    if isinstance(action, handshake.OpenChannel):
        assert not action.direct
        return {"kind": kind}
    if isinstance(action, handshake.Done):
        return {"kind": kind, "keys": _MATCH if _mirrored(action.keys, peer.keys) else "other"}
    if isinstance(action, handshake.Fail):
        return {"kind": kind, "error": type(action.error).__name__}
    return {"kind": kind}  # Reconnect, Leave


def _fail_says(actions: list[handshake.Action]) -> Iterator[str]:
    for action in actions:
        if isinstance(action, handshake.Fail):
            yield str(action.error)


def _compare(
    described: list[dict[str, Any]], expected: list[dict[str, Any]], says: list[str]
) -> None:
    # ``says`` is a part of the message, where the script names one.
    wanted = []
    for action in expected:
        if action["kind"] == "Fail" and "says" in action:
            assert any(action["says"] in message for message in says), (action, says)
            action = {k: v for k, v in action.items() if k != "says"}
        wanted.append(action)
    assert described == wanted


def _machine(script: dict[str, Any]) -> handshake.Handshake:
    words = iter(script.get("words", []))
    code = None
    if "code" in script:
        # A code is ``PEER-ID-word-word``: the peer ID is its first two parts.
        parts = script["code"].split("-")
        code = Code("-".join(parts[:2]), "-".join(parts[2:]))
    return handshake.Handshake(
        Role(script["side"]),
        code=code,
        connect_timeout=_VECTORS["connect_timeout"],
        streams=script.get("streams", 1),
        new_words=lambda: next(words),
    )


def run_script(script: dict[str, Any], make: Any = _machine) -> None:
    """Drive one script through a fresh machine, asserting every step."""
    machine = make(script)
    peer = _Peer(script)
    for index, step in enumerate(script["steps"]):
        where = f"{script['name']}, step {index}: {step['input']}"
        at, given = step["at"], step["input"]
        if step.get("glue_error"):
            with pytest.raises(ValueError, match=r"in state|after the handshake is over"):
                machine.handle(_event(given, peer), at)
            continue
        if given.get("timer"):
            actions = machine.handle_timer(at)
        else:
            actions = machine.handle(_event(given, peer), at)
        described = [_describe(action, peer) for action in actions]
        try:
            _compare(described, step["actions"], list(_fail_says(actions)))
        except AssertionError as exc:
            raise AssertionError(f"{where}: {described} != {step['actions']}") from exc
        assert machine.state.value == step["state"], where
        assert machine.next_deadline() == step["deadline"], where


def test_the_scripts_cover_the_flows() -> None:
    assert _VECTORS["partner_gone_grace_seconds"] == handshake.PARTNER_GONE_GRACE_SECONDS
    scripts = _VECTORS["scripts"]
    assert len(scripts) >= 10
    ends = {s["steps"][-1].get("state") for s in scripts}
    assert {"done", "failed"} <= ends
    assert {(s["side"], "code" in s) for s in scripts} == {
        (side, joins) for side in ("sender", "receiver") for joins in (True, False)
    }


@pytest.mark.parametrize("script", _VECTORS["scripts"], ids=lambda s: s["name"])
def test_python_machine_follows_the_script(script: dict[str, Any]) -> None:
    run_script(script)


def test_a_machine_that_forgets_the_one_try_fails_the_scripts() -> None:
    """A machine that lets a wrong code pass quietly (no abort to the partner) is caught."""

    class Quiet(handshake.Handshake):
        def _wrong_code(self, error: WrongCodeError) -> list[handshake.Action]:
            return self._fail(error)

    def quiet(script: dict[str, Any]) -> handshake.Handshake:
        machine = _machine(script)
        machine.__class__ = Quiet
        return machine

    wrong = next(s for s in _VECTORS["scripts"] if "does not open, one guess" in s["name"])
    with pytest.raises(AssertionError):
        run_script(wrong, quiet)
