"""The numbers and names the command line shows before anything heavy is imported.

``sfs --help`` and ``sfs --version`` must answer at once (under 0.2 s), so the CLI
(sfs/cli.py, sfs/commands/) cannot import aiortc, aiohttp, cryptography or socketio
to learn a default. Each value lives here once, and the module that uses it imports
it from here (and re-exports it under its usual name). This module imports nothing but ``enum``.
"""

from __future__ import annotations

import enum

# -- versions (imported from here by each module that speaks the protocol; no aliases) ------

#: The transfer protocol (sfs.peer.proto.wire and .framing): frames inside the encrypted channel.
TRANSFER_PROTOCOL_VERSION = 3
#: The set-up (sfs.peer.proto.crypto, sfs.peer.proto.handshake): SPAKE2, key labels, sealed offers.
SETUP_PROTOCOL_VERSION = 1
#: The signaling events between a peer and `sfs serve` (sfs.signal.messages).
SIGNALING_PROTOCOL_VERSION = 1

# -- the transfer ------------------------------------------------------------------------------

#: Bytes a sealed frame adds to its plaintext: a 12-byte nonce and a 16-byte GCM tag.
FRAME_OVERHEAD_BYTES = 12 + 16
#: The largest DataChannel message aiortc and browsers accept (a=max-message-size).
MAX_MESSAGE_BYTES = 262_144
MAX_CHUNK_BYTES = MAX_MESSAGE_BYTES - FRAME_OVERHEAD_BYTES
#: Frames of exactly 64 KiB: measured fastest with aiortc on this project's bench
#: (docs/PERFORMANCE.md); larger messages make aiortc's reassembly slower.
DEFAULT_CHUNK_BYTES = 64 * 1024 - FRAME_OVERHEAD_BYTES
#: A text message (``sfs send --text``) is held in memory: more is a file.
MAX_TEXT_BYTES = 1024 * 1024
MAX_SENDER_NAME_CHARS = 64
#: The most peer connections one session stripes over (the receiver enforces it).
MAX_STREAMS = 8
#: `sfs send --many N`: the most receivers one code may serve.  Each is one online
#: guess at the code, so this bounds the guesses one code gives (SECURITY.md).
MAX_MANY = 20


class Transport(enum.Enum):
    """``--transport``: which way the transfer may go."""

    AUTO = "auto"
    TCP = "tcp"
    DATACHANNEL = "datachannel"


class RelayMode(enum.Enum):
    """``--relay``: whether the relay of ``sfs serve`` may carry the transfer."""

    #: After the peer-to-peer ways had a head start; whichever connects first wins.
    AUTO = "auto"
    NEVER = "never"
    #: Only through the relay: no direct dials, no WebRTC (tests, and networks that
    #: punish connection attempts).
    ONLY = "only"


# -- the peers' timing ---------------------------------------------------------------------------

#: In LAN mode, how long the joining side looks for the code's peer on mDNS when
#: --connect-timeout is not given: on a LAN a waiting peer answers within a second.
LAN_FIND_SECONDS = 5.0
#: How long to wait for each step of the other side during set-up, and for ICE,
#: DTLS and SCTP once the offer and answer are exchanged (--connect-timeout).
PEER_CONNECT_TIMEOUT_SECONDS = 30.0
#: After the connection breaks mid-transfer, how long both sides look for each other
#: again before giving up (--reconnect-window; 0: never).
RECONNECT_WINDOW_SECONDS = 300.0

# -- `sfs serve` (ServerConfig has the reasoning per limit) ------------------------------------

DEFAULT_PORT = 5000
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_JOIN_TIMEOUT_SECONDS = 10.0
DEFAULT_REGISTER_TIMEOUT_SECONDS = 10.0
DEFAULT_PAIRING_TIMEOUT_SECONDS = 120.0
DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION = 512 * 1024
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
DEFAULT_FD_RESERVE = 256
# The listen backlog is also how many connections one pass of the event loop may
# accept before any of them is looked at, so the fds kept free must exceed it.
LISTEN_BACKLOG = 128
# Descriptors the server may open besides connections (logs, DNS, a pipe or two).
FD_SPARE = 16
MIN_FD_RESERVE = LISTEN_BACKLOG + 2 * FD_SPARE
#: With --redis: how long a node's peers stay registered after its last heartbeat.
DEFAULT_REDIS_TTL_SECONDS = 10.0
MIN_REDIS_TTL_SECONDS = 2.0
#: How long an issued TURN credential is valid (--turn-ttl).
DEFAULT_TURN_TTL_SECONDS = 3600

# The relay in `sfs serve` (sfs.signal.relay, sfs.signal.relay_server); why each is
# what it is: sfs.signal.relay.RelayLimits.
DEFAULT_RELAY_WAIT_SECONDS = 10.0
DEFAULT_RELAY_PAIRS_PER_ADDRESS = 8
DEFAULT_RELAY_MAX_PAIRS = 500
DEFAULT_RELAY_IDLE_SECONDS = 30.0

#: The most paired devices one device keeps (`sfs pair`); `sfs receive` waits for each
#: at its rendezvous, beside its code.
MAX_PAIRS = 16
