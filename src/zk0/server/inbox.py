"""Messages out and replies in through Flower's Grid, a few at a time.

Flower's `Grid.send_and_receive` pushes a round's messages all at once and returns only when
every reply is in (or its timeout passed), holding them all. A server with hundreds of
nodes cannot: `push` sends each message as it is made (its content may go once pushed) and
`replies` yields each reply as it arrives, pulling at most PULL_AT_ONCE per request, so
the server holds O(1) messages whatever the number of nodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid

PULL_AT_ONCE = 4  # replies pulled per request: the most the server holds undecoded at once
POLL_SECONDS = 1.0


def push(grid: Grid, messages: Iterable[Message]) -> list[str]:
    """Pushes each message as `messages` yields it; their ids."""
    ids: list[str] = []
    for message in messages:
        ids.extend(message_id for message_id in grid.push_messages([message]) if message_id)
    return ids


def available(grid: Grid, ids: Iterable[str]) -> Iterator[Message]:
    """The replies to `ids` that are in now, PULL_AT_ONCE per request."""
    ids = list(ids)
    for start in range(0, len(ids), PULL_AT_ONCE):
        yield from grid.pull_messages(ids[start:start + PULL_AT_ONCE])


def replies(grid: Grid, ids: Iterable[str], deadline: float, quorum: int) -> Iterator[Message]:
    """Replies to `ids` as they arrive, until `quorum` have come or `deadline` (time.monotonic)
    passes, whichever is first. The ones still missing then stay with the SuperLink (pull
    them later with `available`)."""
    pending = set(ids)
    received = 0
    while pending and received < quorum:
        arrived = False
        for reply in available(grid, sorted(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            received, arrived = received + 1, True
            yield reply
            if received >= quorum:
                return
        if time.monotonic() >= deadline:
            return
        if not arrived:
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
