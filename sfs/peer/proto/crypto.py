"""All of sfs's cryptography, as small pure functions and two tiny stateful classes.

Key agreement (SPAKE2 over Ed25519, the ``spake2`` package, as in magic-wormhole)
runs between the two peers only; the signaling server relays its messages and
learns nothing it could use to test a guess offline.  The SPAKE2 identities bind
the receiver's peer ID, so a server that pairs the sender with another peer than
the one asked for produces different keys and the exchange fails.

From the 32-byte SPAKE2 key, HKDF-SHA256 derives one key per purpose and per
direction (``INFO_*`` labels), so no two uses ever share a key:

* signaling, sender -> receiver and receiver -> sender (SDP offer/answer, ICE);
* data, sender -> receiver (metadata, chunks, completion);
* control, receiver -> sender (accept/reject, acknowledgements);
* the same two again for the direct TCP path (``sfs/1 tcp …``), so that no nonce is
  ever used under one key on two transports, and one proof key per role that each
  side proves on a TCP connection before any frame travels on it;
* a relay token (``sfs/1 relay token``), the same on both sides, that each peer
  presents to ``sfs serve``'s relay so that the relay joins their two connections;
  it is not a key: the relay learns it, and learns nothing else from it (HKDF with
  a label of its own), and the TCP proof still runs end to end through the relay;
* a verification string that users may compare out of band.

Frames on the DataChannel are ``[12-byte nonce][AES-256-GCM ciphertext + tag]``.
The nonce is also the frame header: ``version(1) | type(1) | zero(2) | counter(8)``.
It is passed as associated data as well, so the frame type and the per-direction
counter are authenticated; a receiver accepts only the next counter, so frames
cannot be reordered, replayed, dropped or swapped between types unnoticed.
Signaling messages use random nonces instead (a malicious or merely slow server
may reorder harmless ICE candidates), with the message kind in the associated data.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.ed25519_basic import NotOnCurve
from spake2.spake2 import SPAKEError

from sfs.defaults import SETUP_PROTOCOL_VERSION
from sfs.errors import CryptoError, WrongCodeError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FRAME_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
MAX_COUNTER = 2**64 - 1

_SPAKE2_ID_SENDER = b"sfs/1 sender"
_SPAKE2_ID_RECEIVER_PREFIX = b"sfs/1 receiver "
# The sender-first flow: the sender printed the code, so its ID is the one bound.
_SPAKE2_ID_CODE_SENDER_PREFIX = b"sfs/1 code sender "
_SPAKE2_ID_RECEIVER = b"sfs/1 receiver"

INFO_SIGNAL_SENDER = b"sfs/1 signaling sender->receiver"
INFO_SIGNAL_RECEIVER = b"sfs/1 signaling receiver->sender"
INFO_DATA_SENDER = b"sfs/1 data sender->receiver"
INFO_CONTROL_RECEIVER = b"sfs/1 control receiver->sender"
INFO_VERIFY = b"sfs/1 verification"
INFO_TCP_DATA_SENDER = b"sfs/1 tcp data sender->receiver"
INFO_TCP_CONTROL_RECEIVER = b"sfs/1 tcp control receiver->sender"
INFO_TCP_PROOF_SENDER = b"sfs/1 tcp proof sender"
INFO_TCP_PROOF_RECEIVER = b"sfs/1 tcp proof receiver"
INFO_RELAY_TOKEN = b"sfs/1 relay token"
RELAY_TOKEN_BYTES = KEY_BYTES
# A session that lost its connection meets again (issue 28): where (a rendezvous ID
# the server sees) and with what password (for a fresh SPAKE2, never sent).
INFO_RECONNECT = b"sfs/1 reconnect"
INFO_RENDEZVOUS = b"sfs/1 reconnect rendezvous"
INFO_RECONNECT_PASSWORD = b"sfs/1 reconnect password"
#: A rendezvous ID: "~" and 26 base32 letters (130 bits), a shape no code's ID has.
RENDEZVOUS_CHARS = 26
# Trusted devices (issue 29): `sfs pair` keeps a secret from the pairing session's
# SPAKE2 key; every later session between the two meets at a rendezvous and runs a
# fresh SPAKE2 on a password, both derived from that secret and the time.
INFO_PAIRING = b"sfs/1 pairing"
INFO_PAIR_FINGERPRINT = b"sfs/1 pair fingerprint"
INFO_PAIR_RENDEZVOUS = b"sfs/1 pair rendezvous"
INFO_PAIR_PASSWORD = b"sfs/1 pair password"
INFO_PAIR_PROBE = b"sfs/1 pair probe"
#: A pair's rendezvous changes this often (seconds of Unix time), so a server sees a
#: new, unlinkable ID every period; a sender also tries the periods either side of
#: its own, so clocks may differ by up to this much.
PAIR_PERIOD_SECONDS = 600
#: Tags in a LAN pair probe's answer, always (random ones fill the slots no pair
#: uses): the answer says nothing of how many devices a receiver is paired with.
PAIR_PROBE_SLOTS = 16
PAIR_PROBE_NONCE_BYTES = 16
PAIR_PROBE_TAG_BYTES = 16

_HEADER = struct.Struct(">BBHQ")  # version, frame type, reserved, counter


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one transfer session, as seen from one side.

    ``*_send`` keys seal what this side sends, ``*_receive`` keys open what it receives.
    """

    role: str
    signal_send: bytes
    signal_receive: bytes
    frame_send: bytes
    frame_receive: bytes
    verifier: str
    #: The frame keys of the direct TCP path, and the keys whose HMAC proves a role
    #: (this side's, the other side's) on a TCP connection.
    tcp_send: bytes
    tcp_receive: bytes
    proof_send: bytes
    proof_receive: bytes
    #: What both sides present to a relay (:func:`relay_token`); one per session, not per role.
    relay_token: bytes
    #: Where and how the two sides meet again if the connection breaks
    #: (:func:`reconnect_code`); one per session, not per role.
    reconnect: bytes = b""
    #: What `sfs pair` keeps of this session: the two devices' pairing secret
    #: (:func:`pair_code`); one per session, not per role.
    pairing: bytes = b""

    def over_tcp(self) -> SessionKeys:
        """These keys with the TCP path's frame keys as the frame keys: a transfer
        runs on one transport with one set of counters, and the two transports never
        share a key, so no nonce is ever used twice under one key."""
        return dataclasses.replace(self, frame_send=self.tcp_send, frame_receive=self.tcp_receive)

    def __repr__(self) -> str:  # never let a key reach a log line or traceback
        return "SessionKeys(<redacted>)"


class KeyExchange:
    """One side of the SPAKE2 exchange on the secret part of the code.

    The SPAKE2 identities bind the peer ID of the side that printed the code, and
    which side that was: a receiver's code (``sfs receive``) and a sender's code
    (``sfs send --print-code``) never yield the same keys, so no code can be
    carried from one flow into the other.

    :param role: ``"sender"`` (SPAKE2 side A) or ``"receiver"`` (side B).
    :param password: the secret words of the code, e.g. ``b"tiger-lamp"``.
    :param code_id: the peer ID in the code, e.g. ``"ABC-123"``.
    :param printed_by: the role of the side that printed the code.
    :param entropy: randomness source; only known-answer tests pass their own.
    """

    def __init__(
        self,
        *,
        role: str,
        password: bytes,
        code_id: str,
        printed_by: str = "receiver",
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if role not in ("sender", "receiver") or printed_by not in ("sender", "receiver"):
            raise ValueError(f"unknown role {role!r} or {printed_by!r}")
        self.role = role
        self._code_id = code_id
        tag = code_id.encode("ascii")
        if printed_by == "receiver":  # the original flow: its identities are unchanged
            id_a, id_b = _SPAKE2_ID_SENDER, _SPAKE2_ID_RECEIVER_PREFIX + tag
        else:
            id_a, id_b = _SPAKE2_ID_CODE_SENDER_PREFIX + tag, _SPAKE2_ID_RECEIVER
        cls = SPAKE2_A if role == "sender" else SPAKE2_B
        self._spake: SPAKE2_A | SPAKE2_B | None = cls(
            password, idA=id_a, idB=id_b, entropy_f=entropy
        )
        self._message: bytes = self._spake.start()

    @property
    def message(self) -> bytes:
        """The message to hand to the other side (via ``send_public_key``)."""
        return self._message

    def finish(self, peer_message: bytes) -> SessionKeys:
        """Combine the other side's message into this side's session keys.

        A wrong code is not detected here (SPAKE2 cannot tell); it shows up when the
        first sealed message fails to open.  The SPAKE2 state, which holds the
        password, is dropped here either way: an exchange is good for one attempt.
        """
        spake, self._spake = self._spake, None
        if spake is None:
            raise ValueError("this key exchange has already finished")
        try:
            pake_key: bytes = spake.finish(peer_message)
        except (SPAKEError, NotOnCurve, ValueError, TypeError) as exc:
            raise WrongCodeError("the other side's key exchange message is invalid") from exc
        finally:
            del spake  # a traceback keeps this frame, and so its locals, alive
        return derive_keys(
            pake_key=pake_key,
            transcript=self._code_id.encode("ascii"),
            role=self.role,
        )


def _hkdf(*, pake_key: bytes, transcript: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=transcript, info=info).derive(
        pake_key
    )


def derive_keys(*, pake_key: bytes, transcript: bytes, role: str) -> SessionKeys:
    """Derive one key per purpose and direction from the SPAKE2 key.

    :param transcript: context both sides agree on (the peer ID in the code); HKDF salt.
    :param role: ``"sender"`` or ``"receiver"``: decides which keys send and which receive.
    """
    keys = {
        info: _hkdf(pake_key=pake_key, transcript=transcript, info=info)
        for info in (
            INFO_SIGNAL_SENDER,
            INFO_SIGNAL_RECEIVER,
            INFO_DATA_SENDER,
            INFO_CONTROL_RECEIVER,
            INFO_VERIFY,
            INFO_TCP_DATA_SENDER,
            INFO_TCP_CONTROL_RECEIVER,
            INFO_TCP_PROOF_SENDER,
            INFO_TCP_PROOF_RECEIVER,
        )
    }
    token = relay_token(pake_key=pake_key, transcript=transcript)
    reconnect = _hkdf(pake_key=pake_key, transcript=transcript, info=INFO_RECONNECT)
    pairing = _hkdf(pake_key=pake_key, transcript=transcript, info=INFO_PAIRING)
    verifier = format_verifier(keys[INFO_VERIFY])
    if role == "sender":
        return SessionKeys(
            role,
            keys[INFO_SIGNAL_SENDER],
            keys[INFO_SIGNAL_RECEIVER],
            keys[INFO_DATA_SENDER],
            keys[INFO_CONTROL_RECEIVER],
            verifier,
            keys[INFO_TCP_DATA_SENDER],
            keys[INFO_TCP_CONTROL_RECEIVER],
            keys[INFO_TCP_PROOF_SENDER],
            keys[INFO_TCP_PROOF_RECEIVER],
            token,
            reconnect,
            pairing,
        )
    if role == "receiver":
        return SessionKeys(
            role,
            keys[INFO_SIGNAL_RECEIVER],
            keys[INFO_SIGNAL_SENDER],
            keys[INFO_CONTROL_RECEIVER],
            keys[INFO_DATA_SENDER],
            verifier,
            keys[INFO_TCP_CONTROL_RECEIVER],
            keys[INFO_TCP_DATA_SENDER],
            keys[INFO_TCP_PROOF_RECEIVER],
            keys[INFO_TCP_PROOF_SENDER],
            token,
            reconnect,
            pairing,
        )
    raise ValueError(f"unknown role {role!r}")


def relay_token(*, pake_key: bytes, transcript: bytes) -> bytes:
    """The 32 bytes both peers of one session present to a relay to be joined.

    Both sides derive the same token (it has no direction); another session, with
    another SPAKE2 key, gets another one.  The relay sees it in the clear, so it has
    a label of its own: knowing it tells nothing about any key of the session, and
    the relay can do no more with it than join (or refuse to join) two connections.
    """
    return _hkdf(pake_key=pake_key, transcript=transcript, info=INFO_RELAY_TOKEN)


def reconnect_code(secret: bytes) -> tuple[str, bytes]:
    """Where a session that lost its connection meets again, and the password of the
    fresh SPAKE2 that authenticates it there: (rendezvous ID, password).

    Both come from the first session's SPAKE2 key (``SessionKeys.reconnect``), so
    only its two sides can compute them, and neither is the code's: the server sees
    the rendezvous ID but cannot link it to the code, and with 256 bits of password
    there is nothing to guess.  A reconnection runs a new SPAKE2 (new ephemeral keys,
    so forward secrecy, and no old message replays into it) and derives new keys.
    """
    if len(secret) != KEY_BYTES:
        raise ValueError("no reconnect secret: this session cannot reconnect")
    where = _hkdf(pake_key=secret, transcript=b"", info=INFO_RENDEZVOUS)
    password = _hkdf(pake_key=secret, transcript=b"", info=INFO_RECONNECT_PASSWORD)
    letters = base64.b32encode(where).decode("ascii").lower()[:RENDEZVOUS_CHARS]
    return "~" + letters, password.hex().encode("ascii")


def _pair_key(secret: bytes, period: int, info: bytes) -> bytes:
    if len(secret) != KEY_BYTES:
        raise ValueError("a pairing secret is 32 bytes")
    return _hkdf(pake_key=secret, transcript=struct.pack(">Q", period), info=info)


def pair_period(unix_seconds: float) -> int:
    """The period a pair's rendezvous is derived for, at ``unix_seconds``."""
    return int(unix_seconds // PAIR_PERIOD_SECONDS)


def pair_code(secret: bytes, period: int) -> tuple[str, bytes]:
    """Where two paired devices meet during ``period``, and the password of the fresh
    SPAKE2 that authenticates each session there: (rendezvous ID, password).

    Only the pair can compute either; the ID changes every period, so a server can
    neither link two sessions of a pair across periods nor join one (256 bits of
    password: nothing to guess); each session's keys come from its own SPAKE2, with
    ephemeral Diffie-Hellman, never from the secret alone.
    """
    where = _pair_key(secret, period, INFO_PAIR_RENDEZVOUS)
    password = _pair_key(secret, period, INFO_PAIR_PASSWORD)
    letters = base64.b32encode(where).decode("ascii").lower()[:RENDEZVOUS_CHARS]
    return "~" + letters, password.hex().encode("ascii")


def pair_fingerprint(secret: bytes) -> str:
    """What both paired devices show, to compare: ``"3f2a-91c0-77d1-0b4e"``."""
    material = _pair_key(secret, 0, INFO_PAIR_FINGERPRINT)[:8].hex()
    return "-".join(material[i : i + 4] for i in range(0, len(material), 4))


def pair_probe_tag(secret: bytes, period: int, *, asked: bytes, answered: bytes) -> bytes:
    """The tag a waiting device proves it holds a pair with (LAN mode): an HMAC of
    both nonces under a key of the pair and the period. Another nonce, another tag."""
    key = _pair_key(secret, period, INFO_PAIR_PROBE)
    return hmac.digest(key, asked + answered, "sha256")[:PAIR_PROBE_TAG_BYTES]


def answer_pair_probe(
    secrets_held: list[bytes],
    period: int,
    asked: bytes,
    *,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[bytes, list[bytes]]:
    """The waiting side's answer to a pair probe: its nonce and PAIR_PROBE_SLOTS tags,
    one per pair it waits for (at most that many), the rest random, in random order.

    Anyone may ask; only a device of one of the pairs recognises a tag, and the
    answer looks the same whatever pairs, and however many, there are.
    """
    if len(asked) != PAIR_PROBE_NONCE_BYTES:
        raise CryptoError("a pair probe's nonce is 16 bytes")
    answered = entropy(PAIR_PROBE_NONCE_BYTES)
    tags = [pair_probe_tag(s, period, asked=asked, answered=answered) for s in secrets_held]
    tags = tags[:PAIR_PROBE_SLOTS]
    tags += [entropy(PAIR_PROBE_TAG_BYTES) for _ in range(PAIR_PROBE_SLOTS - len(tags))]
    shuffled = sorted(tags)  # the order of the pairs would say which slot is real
    return answered, shuffled


def pair_probe_period(
    secret: bytes, asked: bytes, answered: bytes, tags: list[bytes], *, around: int
) -> int | None:
    """(The joining side) which period's tag of the pair is in ``tags``: the waiting
    device holds the pair then; ``None`` if none of ``around`` and its neighbours."""
    for period in (around, around - 1, around + 1):
        tag = pair_probe_tag(secret, period, asked=asked, answered=answered)
        if any(hmac.compare_digest(tag, t) for t in tags):
            return period
    return None


def format_verifier(material: bytes) -> str:
    """A short string both sides can read aloud to compare: ``"1a2b-3c4d-5e6f"``."""
    digest = material[:6].hex()
    return "-".join(digest[i : i + 4] for i in range(0, len(digest), 4))


# -- signaling messages -------------------------------------------------------------------


def seal_message(*, key: bytes, kind: str, plaintext: bytes) -> bytes:
    """Seal one signaling message (offer, answer, ICE candidate) with a random nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _signal_aad(kind))


def open_message(*, key: bytes, kind: str, sealed: bytes) -> bytes:
    """Open a sealed signaling message; :class:`WrongCodeError` if it does not authenticate.

    A message sealed under another key means the two sides derived different keys
    from the code: a typo, a guess, or a server in the middle.  All look the same.
    """
    if len(sealed) < FRAME_OVERHEAD_BYTES:
        raise WrongCodeError()
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _signal_aad(kind))
    except InvalidTag as exc:
        raise WrongCodeError() from exc


def _signal_aad(kind: str) -> bytes:
    return b"sfs/1 signal " + kind.encode("ascii")


# -- DataChannel frames -------------------------------------------------------------------


class FrameSealer:
    """Seals the frames of one direction, numbering them 0, 1, 2, …"""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._counter = 0

    def seal(self, frame_type: int, payload: bytes | memoryview) -> bytes:
        if self._counter > MAX_COUNTER:
            raise CryptoError("too many frames for one session")
        header = _HEADER.pack(SETUP_PROTOCOL_VERSION, frame_type, 0, self._counter)
        self._counter += 1
        return header + self._aead.encrypt(header, payload, header)


class FrameOpener:
    """Opens the frames of one direction, accepting only the next counter."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._counter = 0

    def open(self, frame: bytes) -> tuple[int, bytes]:
        """Return ``(frame_type, payload)``; raise :class:`CryptoError` on any mismatch."""
        if len(frame) < FRAME_OVERHEAD_BYTES:
            raise CryptoError(f"frame too short ({len(frame)} bytes)")
        version, frame_type, reserved, counter = _HEADER.unpack_from(frame)
        if version != SETUP_PROTOCOL_VERSION or reserved != 0:
            raise CryptoError(f"unsupported frame version {version}")
        if counter != self._counter:
            raise CryptoError(
                f"frame {counter} arrived where frame {self._counter} was due"
                " (reordered, replayed or dropped)"
            )
        view = memoryview(frame)  # no copy of the ciphertext for slicing
        header = view[:NONCE_BYTES]
        try:
            payload = self._aead.decrypt(header, view[NONCE_BYTES:], header)
        except InvalidTag as exc:
            raise CryptoError("a frame failed its integrity check (tampered or damaged)") from exc
        self._counter += 1
        return frame_type, payload


def digests_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison for digests and other secrets."""
    return hmac.compare_digest(a, b)


# -- the direct TCP path ------------------------------------------------------------------

#: The first bytes a dialer sends on a direct TCP connection; the version of that path.
TCP_MAGIC = b"sfs/tcp1"
TCP_NONCE_BYTES = 16
TCP_PROOF_BYTES = 32


#: The proof's magic on a QUIC stream, where the listener proves itself first and the
#: dialer's nonce is its QUIC Initial's connection ID: never the same transcript as a
#: TCP connection's.
QUIC_PROOF_MAGIC = b"sfs/quic"


def tcp_proof(
    *,
    key: bytes,
    side: bytes,
    dialer_nonce: bytes,
    listener_nonce: bytes,
    magic: bytes = TCP_MAGIC,
) -> bytes:
    """HMAC-SHA256 of one TCP connection's handshake under a role's proof key.

    ``side`` is ``b"L"`` for the listener's proof and ``b"D"`` for the dialer's: with
    a key per role as well, a proof can be neither reflected nor used for the other
    end; the two fresh nonces make a recorded one useless. ``magic``: TCP_MAGIC, or
    QUIC_PROOF_MAGIC on a QUIC stream.
    """
    transcript = side + magic + dialer_nonce + listener_nonce
    return hmac.new(key, transcript, "sha256").digest()


# -- LAN mode: which endpoint holds the code's ID -----------------------------------------

#: A LAN record does not carry the code's ID (a neighbour who read it could take the
#: waiting peer's one attempt).  The joining side finds the endpoint that holds the
#: ID with a SPAKE2 run on the ID alone: the waiting side proves it knows the ID, and
#: neither side learns anything it could test guesses against offline (a stranger
#: gets one online guess of the ID per probe, out of 17.6 million).
_PROBE_ID_JOINER = b"sfs/1 lan probe joiner"
_PROBE_ID_WAITER_PREFIX = b"sfs/1 lan probe waiter "
INFO_PROBE_PROOF = b"sfs/1 lan probe proof"
#: A waiting endpoint's random name for itself: two endpoints that prove the same
#: ID with different instances are two devices, not one reached two ways.
PROBE_INSTANCE_BYTES = 16
PROBE_PROOF_BYTES = 32


def _probe_password(peer_id: str) -> bytes:
    return peer_id.encode("ascii")


def _probe_proof(*, pake_key: bytes, instance: bytes) -> bytes:
    key = _hkdf(pake_key=pake_key, transcript=b"", info=INFO_PROBE_PROOF)
    return hmac.new(key, instance, "sha256").digest()


class IdProbe:
    """The joining side of one probe: "does this endpoint hold ``peer_id`` for a
    waiting ``waiting_role``?"  One instance per endpoint asked.

    :param entropy: randomness source; only known-answer tests pass their own.
    """

    def __init__(
        self,
        *,
        peer_id: str,
        waiting_role: str,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        id_b = _PROBE_ID_WAITER_PREFIX + waiting_role.encode("ascii")
        self._spake: SPAKE2_A | None = SPAKE2_A(
            _probe_password(peer_id), idA=_PROBE_ID_JOINER, idB=id_b, entropy_f=entropy
        )
        self.message: bytes = self._spake.start()

    def holds(self, *, message: bytes, instance: bytes, proof: bytes) -> bool:
        """Whether the answer proves the ID (False for anything malformed)."""
        spake, self._spake = self._spake, None
        if spake is None:
            raise ValueError("this probe has already been answered")
        if len(instance) != PROBE_INSTANCE_BYTES or len(proof) != PROBE_PROOF_BYTES:
            return False
        try:
            pake_key: bytes = spake.finish(message)
        except (SPAKEError, NotOnCurve, ValueError, TypeError):
            return False
        expected = _probe_proof(pake_key=pake_key, instance=instance)
        return hmac.compare_digest(expected, proof)


def answer_probe(
    *,
    peer_id: str,
    role: str,
    message: bytes,
    instance: bytes,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[bytes, bytes]:
    """The waiting side's answer to a probe: its SPAKE2 message and the proof.

    It answers every well-formed probe the same way, whatever ID the joiner tried:
    only a joiner that used the right ID can check the proof.  Raises
    :class:`CryptoError` for a message that is not a SPAKE2 message.
    """
    spake = SPAKE2_B(
        _probe_password(peer_id),
        idA=_PROBE_ID_JOINER,
        idB=_PROBE_ID_WAITER_PREFIX + role.encode("ascii"),
        entropy_f=entropy,
    )
    answer: bytes = spake.start()
    try:
        pake_key: bytes = spake.finish(message)
    except (SPAKEError, NotOnCurve, ValueError, TypeError) as exc:
        raise CryptoError("not a key exchange message") from exc
    return answer, _probe_proof(pake_key=pake_key, instance=instance)
