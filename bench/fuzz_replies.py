"""Fuzz the server's reply decoding and screening: N mutated q3 training replies.

    .venv/bin/python bench/fuzz_replies.py [--cases 100000] [--seed 1]

Each case is an honest reply (tests/unit/reply_fuzz.py) with 1-3 random mutations, run through
zk0.server.validation.screen_reply, the pipeline aggregate_train applies to every reply. Prints the
number of cases, how many were accepted or rejected, the most common reasons, uncaught
exceptions (must be 0) and the throughput. Exits 1 on any uncaught exception.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from reply_fuzz import broadcast, honest_reply, mutate, screen  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)  # RecordDict warns on every overwritten key
    expected, honest = broadcast(), honest_reply()
    verdicts: collections.Counter = collections.Counter()
    crashes: list[str] = []
    started = time.perf_counter()
    for case in range(args.cases):
        rng = random.Random(args.seed * 1_000_003 + case)
        try:
            verdict = screen(mutate(honest, rng), expected)
        except Exception:  # noqa: BLE001 - what the bench counts
            crashes.append(f"case {case}: {traceback.format_exc(limit=3)}")
            continue
        verdicts[re.sub(r"'[^']*'|\d+(\.\d+)?(e[+-]?\d+)?", "_", verdict)[:90]] += 1
    seconds = time.perf_counter() - started
    accepted = verdicts.pop("accepted", 0)
    print(f"cases {args.cases} | accepted {accepted} | rejected {sum(verdicts.values())} | "
          f"uncaught exceptions {len(crashes)} | {seconds:.1f}s, {args.cases / seconds:.0f} replies/s")
    for reason, count in verdicts.most_common(12):
        print(f"  {count:7d}  {reason}")
    for crash in crashes[:5]:
        print(crash)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
