"""The console of a zk0 app process: Flower's chatter can be quieted, zk0's own lines stay,
and an error zk0 explained in one line is not followed by its traceback.

zk0 logs through Flower's logger (`flwr.common.log`), so `FLWR_LOG_LEVEL` (which
Flower applies to its console handler at import) would hide zk0's per-round summary
along with Flower's banners. `keep_zk0_lines()` lets zk0's own records through at INFO
while Flower's still need the level the user chose: `train-fl-simulation.sh` runs with
`FLWR_LOG_LEVEL=WARNING` unless `--verbose`, and shows one line per round.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from flwr.common.logger import console_handler

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # zk0/, whose modules log the lines kept
# Flower's simulation engine logs each failed message in full (Ray's memory report, two
# tracebacks) from these files; zk0 logs the node's failure as one line of its own.
_ENGINE_FILES = ("/fleet/vce/vce_api.py", "/fleet/vce/backend/raybackend.py")


class _ZK0LinesFilter(logging.Filter):
    """Passes records at `level` and above, and zk0's own records (logged from its modules) at INFO."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "zk0_debug", False):  # for the run's debug.log only
            return False
        if record.levelno >= self.level:
            return True
        return record.levelno >= logging.INFO and Path(record.pathname).resolve().is_relative_to(PACKAGE_DIR)


def keep_zk0_lines() -> None:
    """Call once at app start (idempotent). No effect unless Flower's console level is above INFO."""
    if console_handler.level <= logging.INFO or any(isinstance(f, _ZK0LinesFilter) for f in console_handler.filters):
        return
    console_handler.addFilter(_ZK0LinesFilter(console_handler.level))
    console_handler.setLevel(logging.INFO)


class _LoggedErrorFilter(logging.Filter):
    """Drops the traceback Flower adds when it logs the exception that ended the ServerApp, when
    zk0 has already logged that exception as its one operator-facing line (`zk0_logged`): the
    frames tell an operator nothing more, and the log then ends in the reason, not in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and getattr(record.exc_info[1], "zk0_logged", False):
            record.exc_info = record.exc_text = None
        return True


def one_line_errors() -> None:
    """Call once at ServerApp start (idempotent); other exceptions keep their tracebacks."""
    logger = logging.getLogger("flwr")
    if not any(isinstance(f, _LoggedErrorFilter) for f in logger.filters):
        logger.addFilter(_LoggedErrorFilter())


def _from_engine(record: logging.LogRecord) -> bool:
    return record.pathname.replace("\\", "/").endswith(_ENGINE_FILES) or getattr(record, "zk0_debug", False)


@contextlib.contextmanager
def run_log(path: Path, debug_path: Path):
    """zk0's lines (and everyone's warnings) also go to `path`, the run directory's server.log:
    in deployment the ServerApp's console is not kept anywhere an operator can read. The
    simulation engine's full records of failed nodes (and zk0's records marked `zk0_debug`)
    go to `debug_path` instead, created when the first one comes."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    handler.addFilter(_ZK0LinesFilter(logging.WARNING))
    handler.addFilter(lambda record: not _from_engine(record))
    handler.setLevel(logging.INFO)
    debug = logging.FileHandler(debug_path, delay=True)
    debug.setFormatter(formatter)
    debug.addFilter(_from_engine)
    debug.setLevel(logging.DEBUG)
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    logger.addHandler(debug)
    try:
        yield
    finally:
        logger.removeHandler(debug)
        logger.removeHandler(handler)
        debug.close()
        handler.close()
