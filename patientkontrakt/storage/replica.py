"""Reads on a streaming replica, and read-your-writes (docs/operations.md, "Replicas, PgBouncer, failover").

With ``PK_DATABASE_REPLICA_URL`` the store has a second engine on a hot standby. Reads whose
staleness a client can bear (read, vread, search, ``$everything``: ``Store.replica_reading``,
``Store.read_current(..., replica=True)``) go there; everything else stays on the primary:
writes, the access log (a read's entry too), tokens and server state, and history (its safe
point is the primary's: ``Store.safe_point``).

Read-your-writes: a write that commits notes the primary's WAL position just after its commit
(``pg_current_wal_lsn()``) in the request's ``ReadSession``; the API returns it in the ``X-PK-LSN``
header and remembers it for the client (``RecentWrites``, in this process, bounded). A later read
of that client, in this process, or carrying the header back from any process, needs the replica
to have replayed that position: the store waits up to ``PK_REPLICA_WAIT`` seconds for
``pg_last_wal_replay_lsn()`` to pass it, then reads from the primary instead.

The session is a context variable the API sets once it knows the caller of a FHIR request
(``api/auth.py``); the store reads it, the FHIR engine never sees it. Without one (the staff and
patient pages, which show a form's result right after it is saved; the service's own work) reads
stay on the primary.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from contextvars import ContextVar
from dataclasses import dataclass

LSN_HEADER = "X-PK-LSN"
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str | None) -> int | None:
    """A PostgreSQL LSN (``16/B374D848``) as a number; None for anything else (a client's header
    is only a hint: a malformed one is ignored)."""
    if not text:
        return None
    found = _LSN.match(text.strip())
    if found is None:
        return None
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class ReadSession:
    """One request's needs of the replica: ``client`` (whose recent writes count), ``after`` (the
    position the client sent back, ``X-PK-LSN``) and, once it wrote, ``written`` (the position
    after its last commit)."""

    client: Hashable | None = None
    after: int | None = None
    written: int | None = None


SESSION: ContextVar[ReadSession | None] = ContextVar("patientkontrakt_read_session", default=None)


class RecentWrites:
    """The WAL position after each client's last write, for the last ``size`` clients that wrote."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._positions: OrderedDict[Hashable, int] = OrderedDict()

    def remember(self, client: Hashable, position: int) -> None:
        previous = self._positions.pop(client, 0)
        self._positions[client] = max(previous, position)
        while len(self._positions) > self.size:
            self._positions.popitem(last=False)

    def of(self, client: Hashable | None) -> int | None:
        return None if client is None else self._positions.get(client)

    def floor(self, session: ReadSession | None) -> int | None:
        """The position a read of this session must see: the highest of what the client sent,
        what it wrote last here, and what this request wrote."""
        if session is None:
            return None
        known = [p for p in (session.after, self.of(session.client), session.written) if p is not None]
        return max(known) if known else None
