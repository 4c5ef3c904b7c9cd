"""Flower's SuperNode (`flower-supernode`, same arguments), but a process that ends when it
stops serving.

Flower's Fleet loop gives up on errors it deems final (a TLS handshake cut short by an
overloaded proxy reads as one) and raises, while its Runtime API thread keeps the process
alive: a node that is running yet offline for good, which no supervisor notices. Here any
end of the loop ends the process, with one line naming why, so that zk0bot's restart loop
starts it again (with backoff). Flower's own reconnection retries stay unlimited
(`--max-retries` and `--max-wait-time` unset).

    python -m zk0.ops.supernode [flower-supernode arguments]
"""

from __future__ import annotations

import os
import sys

from flwr.supernode.cli import flower_supernode


def main() -> None:
    try:
        flower_supernode()
        code = 0
    except SystemExit as stop:  # Flower's signal handlers end it this way (TERM, INT)
        code = stop.code if isinstance(stop.code, int) else 1
    except Exception as err:  # noqa: BLE001 - any end of the Fleet loop ends the process
        first = str(err).splitlines()[0][:200] if str(err) else ""
        print(f"zk0: the SuperNode stopped serving ({type(err).__name__}: {first}); exiting to be restarted",
              file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Runtime API's server thread would keep a plain exit waiting.
    os._exit(code)


if __name__ == "__main__":
    main()
