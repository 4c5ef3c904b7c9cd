"""A node's failure as one line: what it said, without the wrappers it travelled in.

An exception in a ClientApp reaches the server as an error reply whose reason is the
whole story: under simulation Ray's `RayTaskError(ClientAppException)` repr with both
tracebacks and terminal colours, in deployment Flower's ClientAppException text. People
need the zk0 error's own line ("DatasetError: dataset local:/x: directory does not
exist; ..."), the same words `zk0 check-dataset` prints. A simulation actor that died
under the node (Ray's memory monitor or a signal killed its process) becomes one line naming
the cause and the knob, not Ray's memory report.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The raising line of a zk0 exception, as a traceback ends: `zk0.data.dataset.DatasetError: dataset ...`.
_ZK0_ERROR = re.compile(r"^zk0(?:\.\w+)+\.(\w+): (.+)$")
# Flower's form of an exception in deployment: `<class 'zk0.data.dataset.DatasetError'>:<'dataset ...'>`.
_CLASS_REPR = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$")
# Flower's wrapper around a ClientApp exception's text in simulation.
_FLOWER_MESSAGE = re.compile(r"Exception \w+ occurred\. Message: (.+)$")
# The end of the exception repr Ray's text sits in: `...'>`.
_REPR_TAIL = re.compile(r"'>$")
# Ray's words for an actor whose process died (ray.exceptions.ActorDiedError), and for one its
# memory monitor killed: the machine's memory then and the threshold it crossed.
_ACTOR_DIED = re.compile(r"ActorDiedError|OutOfMemoryError|The actor died unexpectedly|The actor is dead because")
_MEMORY_MONITOR = re.compile(r"was ([\d.]+)GB / ([\d.]+)GB \(([\d.]+)\), which exceeds the memory usage threshold of ([\d.]+)")
_KNOBS = ("run fewer actors at once (train-fl-simulation.sh --actors) or set RAY_memory_usage_threshold "
          "(docs/RUNNING.md, 'Memory')")


def one_line(reason: str, limit: int = 600) -> str:
    """The reason's own line: a zk0 error as `Name: message`, else Flower's message, else the
    last meaningful line; no ANSI codes, at most `limit` characters (see `shorten`). A node's
    refusal of a FAB (zk0_executor.trust, about 500 characters) fits whole."""
    lines = [line.strip() for line in _ANSI.sub("", reason).splitlines() if line.strip()]
    return shorten(_actor_lost(reason) or _pick(lines), limit)


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: a longer one loses its middle, not its end, which
    says what to do ("...; if the server upgraded zk0, run 'zk0bot upgrade' on this node ...")."""
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 2
    return text[: limit - 1 - tail] + "…" + text[len(text) - tail:]


def _actor_lost(reason: str) -> str:
    """A simulation actor's death, in one line with its cause and the knob; '' for any other reason."""
    if not _ACTOR_DIED.search(reason):
        return ""
    memory = _MEMORY_MONITOR.search(reason)
    if memory:
        used, total, share, threshold = memory.groups()
        return (f"ActorKilled: Ray's memory monitor killed this node's simulation actor: the machine used "
                f"{used} of {total} GB ({float(share):.0%}), above RAY_memory_usage_threshold {float(threshold):g}; "
                f"{_KNOBS}")
    return ("ActorKilled: this node's simulation actor was killed (a signal, e.g. the kernel's OOM killer, or a "
            f"crash ended its process); if memory ran short, {_KNOBS}")


def _pick(lines: list[str]) -> str:
    for line in reversed(lines):
        match = _ZK0_ERROR.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    if len(lines) == 1 and _CLASS_REPR.match(lines[0]):
        return "{}: {}".format(*_CLASS_REPR.match(lines[0]).groups())
    for line in reversed(lines):
        match = _FLOWER_MESSAGE.search(line)
        if match:
            return _REPR_TAIL.sub("", match.group(1)).strip()
    meaningful = [line for line in lines if not set(line) <= set("^~ ")]
    return _REPR_TAIL.sub("", meaningful[-1]).strip() if meaningful else ""
