"""Messages out and replies in through Flower's Grid, a few at a time.

Flower's `Grid.send_and_receive` pushes a round's messages all at once and returns only when
every reply is in (or its timeout passed), holding them all. A server with hundreds of
nodes cannot: `push` sends each message as it is made (its content may go once pushed) and
`replies` yields each reply as it arrives, pulling at most PULL_AT_ONCE per request, so
the server holds O(1) messages whatever the number of nodes; the round's owner says when
it has enough (a quorum of usable replies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

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


def available(grid: Grid, ids: Iterable[str]) -> Iterator[list[Message]]:
    """The replies to `ids` that are in now, one list per request of at most PULL_AT_ONCE."""
    ids = list(ids)
    for start in range(0, len(ids), PULL_AT_ONCE):
        yield grid.pull_messages(ids[start:start + PULL_AT_ONCE])


def replies(grid: Grid, ids: Iterable[str], deadline: float,
            enough: Callable[[], bool] = lambda: False) -> Iterator[Message]:
    """Replies to `ids` as they arrive, until every one has come, `deadline` (time.monotonic)
    passes or `enough()` is true, whichever is first. `enough` is asked after the consumer has
    handled a request's replies (it counts what it found usable): a pulled reply is gone from
    the SuperLink, so every one pulled is handed over. The ones still missing then stay with
    the SuperLink (pull them later with `available`)."""
    pending = set(ids)
    while pending and not enough():
        arrived = False
        for pulled in available(grid, sorted(pending)):
            for reply in pulled:
                pending.discard(reply.metadata.reply_to_message_id)
                arrived = True
                yield reply
            if enough():
                return
        if time.monotonic() >= deadline:
            return
        if not arrived:
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
