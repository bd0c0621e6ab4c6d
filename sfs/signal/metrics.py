"""What ``GET /metrics`` serves: one signaling node's counts, in Prometheus text format.

Counts only: no metric has a label that could carry a peer ID, a client address, an
event name a client chose or a Redis URL.  Labels take values from fixed sets (the
error codes of sfs.signal.messages, the relayed event names, the reasons a client is
dropped), all known here, so each series shows from the start, at 0.

Each node serves its own counts: scrape every node, not the load balancer in front
of them (docs/DEPLOY.md).  Gauges of the registry's shared state (``pending``,
``pairs``) count what this node's peers asked for, so they add up over the nodes.
"""

from __future__ import annotations

import math

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client import generate_latest as _generate_latest

from sfs.signal import messages as m
from sfs.signal.registry import UNAVAILABLE_REASON
from sfs.signal.relay import NO_PARTNER, Refusal

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Client events whose payload the server passes on to the partner.
RELAYED_EVENTS = (m.SEND_PUBLIC_KEY, m.OFFER, m.ANSWER, m.ICE_CANDIDATE, m.ABORT)
#: Why a request can be refused: an error code, or the registry being unreachable.
REJECT_REASONS = (*sorted(m.ERROR_CODES), UNAVAILABLE_REASON)
#: Why the server ends a client's connection itself.
DROP_REASONS = (
    "unread",  # left more unread than its budget
    "malformed",  # sent a packet or frame no sfs client sends
    "no_join",  # did not join the Socket.IO namespace in time
    "no_register",  # did not register in time
    "stalled",  # its request or pairing did not end in time
    "lost",  # the registry lost its peer ID (Redis restarted empty, or expired it)
)

#: Why the relay refuses or closes a connection before it pairs.
RELAY_REFUSALS = (*(reason.value for reason in Refusal), NO_PARTNER)


class Metrics:
    """The counters and gauges of one node, in a registry of their own (so that
    several servers in one process, as in the tests, each count their own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "sfs_connections", "Socket.IO connections to this node", registry=r
        )
        self.peers = Gauge("sfs_registered_peers", "Registered peers on this node", registry=r)
        self.pending = Gauge(
            "sfs_pending_requests",
            "Connection requests not yet accepted, made by peers on this node",
            registry=r,
        )
        self.pairings = Gauge(
            "sfs_pairings", "Pairings whose requester is on this node", registry=r
        )
        self.registry_up = Gauge(
            "sfs_registry_up", "1 when the peer registry (Redis) answered the scrape", registry=r
        )
        self.registrations = Counter(
            "sfs_registrations", "Peer IDs given out by this node", registry=r
        )
        self.paired = Counter(
            "sfs_pairings_made", "Connection requests accepted by peers on this node", registry=r
        )
        self.relayed = Counter(
            "sfs_relayed_messages",
            "Messages passed from a peer on this node to its partner",
            ["event"],
            registry=r,
        )
        self.rejected = Counter(
            "sfs_rejected_events", "Client events refused, by reason", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "sfs_lookup_rate_limited",
            "Lookups (find_peer, send_connection_request) refused by a rate limit",
            registry=r,
        )
        self.dropped = Counter(
            "sfs_dropped_connections",
            "Connections the server ended itself, by reason",
            ["reason"],
            registry=r,
        )
        self.relay_bytes = Counter(
            "sfs_relay_bytes", "Bytes the relay passed between the ends of its pairs", registry=r
        )
        self.relay_pairs = Gauge("sfs_relay_pairs_active", "Relay pairs open now", registry=r)
        self.relay_waiting = Gauge(
            "sfs_relay_waiting", "Relay connections waiting for their partner", registry=r
        )
        self.relay_refused = Counter(
            "sfs_relay_refused",
            "Relay connections refused, or closed for want of a partner, by reason",
            ["reason"],
            registry=r,
        )
        for reason in RELAY_REFUSALS:
            self.relay_refused.labels(reason=reason)
        for event in RELAYED_EVENTS:
            self.relayed.labels(event=event)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)

    def reject(self, reason: str, code: str) -> None:
        self.rejected.labels(reason=reason).inc()
        if code == m.RATE_LIMITED:
            self.rate_limited.inc()

    def drop(self, reason: str) -> None:
        self.dropped.labels(reason=reason).inc()

    def render(self, stats: dict[str, int], *, registry_up: bool) -> bytes:
        """The text exposition, with the gauges set from *stats* (``Registry.stats``);
        a count the registry could not give is NaN, not a stale number."""
        self.connections.set(stats.get("connections", math.nan))
        self.peers.set(stats.get("peers", math.nan))
        self.pending.set(stats.get("pending", math.nan))
        self.pairings.set(stats.get("pairs", math.nan))
        self.registry_up.set(1 if registry_up else 0)
        return _generate_latest(self.registry)
