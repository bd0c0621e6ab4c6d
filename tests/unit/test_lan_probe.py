"""LAN mode's probe: does an endpoint hold the code's ID?  A SPAKE2 run on the ID alone
(sfs.peer.proto.crypto.IdProbe, answer_probe) and the embedded server's answer to it."""

from __future__ import annotations

import base64
import os

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.errors import CryptoError
from sfs.lan.embedded import PROBE_WINDOW_SECONDS, PROBES_PER_ADDRESS, Holding, embedded_server
from sfs.lan.record import PROBE_PATH
from sfs.peer.proto.crypto import PROBE_INSTANCE_BYTES, IdProbe, answer_probe
from tests.helpers import counter_entropy

INSTANCE = bytes(range(PROBE_INSTANCE_BYTES))


def ask(peer_id: str, *, holder_id: str, role: str = "receiver", waiting: str = "receiver") -> bool:
    question = IdProbe(peer_id=peer_id, waiting_role=waiting)
    message, proof = answer_probe(
        peer_id=holder_id, role=role, message=question.message, instance=INSTANCE
    )
    return question.holds(message=message, instance=INSTANCE, proof=proof)


def test_probe_known_answer() -> None:
    question = IdProbe(peer_id="KQZ-042", waiting_role="receiver", entropy=counter_entropy(1))
    message, proof = answer_probe(
        peer_id="KQZ-042",
        role="receiver",
        message=question.message,
        instance=INSTANCE,
        entropy=counter_entropy(2),
    )
    assert question.message.hex().startswith("41365033f34b9b9a5d8febfa19129975")
    assert message.hex().startswith("42d8194f202f8e7eaaebb64c63e95427")
    assert proof.hex() == "44b6c1b11ee92bb98b747da6306c5d5dce98272df520d3fef985fbf08f43e74c"
    assert question.holds(message=message, instance=INSTANCE, proof=proof)


def test_only_the_right_id_and_role_prove() -> None:
    assert ask("KQZ-042", holder_id="KQZ-042")
    assert not ask("KQZ-043", holder_id="KQZ-042")
    assert not ask("KQZ-042", holder_id="KQZ-042", role="sender")  # a waiting sender
    assert ask("KQZ-042", holder_id="KQZ-042", role="sender", waiting="sender")


def test_a_tampered_answer_proves_nothing() -> None:
    def answered() -> tuple[IdProbe, bytes, bytes]:
        question = IdProbe(peer_id="KQZ-042", waiting_role="receiver")
        message, proof = answer_probe(
            peer_id="KQZ-042", role="receiver", message=question.message, instance=INSTANCE
        )
        return question, message, proof

    question, message, proof = answered()
    other = bytes(PROBE_INSTANCE_BYTES)  # a relay that claims another instance
    assert not question.holds(message=message, instance=other, proof=proof)
    question, message, proof = answered()
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    assert not question.holds(message=message, instance=INSTANCE, proof=flipped)
    question, message, proof = answered()
    assert not question.holds(message=message[:-1], instance=INSTANCE, proof=proof)
    with pytest.raises(ValueError, match="already"):
        question.holds(message=message, instance=INSTANCE, proof=proof)


def test_an_answer_is_the_same_shape_whatever_id_was_tried() -> None:
    """The waiting side cannot tell a right guess from a wrong one, and says nothing
    that differs between them: only the joiner learns the outcome."""
    for tried in ("KQZ-042", "ABC-123"):
        question = IdProbe(peer_id=tried, waiting_role="receiver")
        message, proof = answer_probe(
            peer_id="KQZ-042", role="receiver", message=question.message, instance=INSTANCE
        )
        assert len(message) == 33
        assert len(proof) == 32


@given(st.binary(max_size=80))
def test_garbage_probes_are_refused_or_prove_nothing(garbage: bytes) -> None:
    try:
        _message, proof = answer_probe(
            peer_id="KQZ-042", role="receiver", message=garbage, instance=INSTANCE
        )
    except CryptoError:
        return
    assert len(proof) == 32
    question = IdProbe(peer_id="KQZ-042", waiting_role="receiver")
    assert not question.holds(message=garbage, instance=INSTANCE, proof=proof)


def test_probes_per_address_are_limited() -> None:
    holding = Holding("receiver", peer_id="KQZ-042")
    assert all(holding.admit("10.0.0.9", 100.0) for _ in range(PROBES_PER_ADDRESS))
    assert not holding.admit("10.0.0.9", 100.0)
    assert holding.admit("10.0.0.10", 100.0)  # another address has its own
    assert holding.admit("10.0.0.9", 100.0 + PROBE_WINDOW_SECONDS + 0.1)


async def test_the_embedded_server_answers_probes_over_http() -> None:
    """A real embedded server on loopback: it proves its waiting side's ID, refuses
    before it has one, and refuses malformed probes without falling over."""
    async with embedded_server("receiver") as server, aiohttp.ClientSession() as http:
        url = server.local_url + PROBE_PATH

        async def probe(peer_id: str) -> tuple[int, bool]:
            question = IdProbe(peer_id=peer_id, waiting_role="receiver")
            body = {"msg": base64.b64encode(question.message).decode()}
            async with http.post(url, json=body) as response:
                if response.status != 200:
                    return response.status, False
                answer = await response.json()
            fields = [base64.b64decode(answer[k]) for k in ("msg", "instance", "proof")]
            return 200, question.holds(message=fields[0], instance=fields[1], proof=fields[2])

        assert await probe("KQZ-042") == (503, False)  # nobody registered yet
        server.holding.peer_id = "KQZ-042"
        assert await probe("KQZ-042") == (200, True)
        assert await probe("ABC-123") == (200, False)
        for body in (b"{}", b"nonsense", b'{"msg": "!!"}', os.urandom(600)):
            async with http.post(url, data=body) as response:
                assert response.status == 400, body
        async with http.get(server.local_url + "/healthz") as response:
            assert response.status == 200  # still up
