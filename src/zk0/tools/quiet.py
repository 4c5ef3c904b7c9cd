"""LeRobot's dataset writer, quiet: otherwise ~25 lines per episode (SVT-AV1's banner, libav's
muxer notes, the datasets library's progress bars) bury the lines that say what was written.
Part of it is printed by C libraries straight to the process's file descriptors, so the writer
runs with both pointed at a temporary file, whose tail is shown if the writing fails."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

TAIL_LINES = 20


@contextlib.contextmanager
def quiet_dataset_writer():
    import datasets

    datasets.disable_progress_bars()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 1)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            captured.seek(0)
            tail = captured.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
            print("\n".join(tail), file=sys.stderr)
            raise
        finally:
            _restore(saved)


def _restore(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if saved[0] >= 0:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        saved[:] = [-1, -1]
