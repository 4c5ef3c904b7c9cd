"""flower-superexec, with each app's token handed over out of sight of other accounts.

Flower's SubprocessExecutor starts `flwr-serverapp ... --token TOKEN`: the token that lets
a process act as the run's ServerApp on the Runtime API is then readable by every local
account in `ps`. This executor hands it over in an anonymous in-memory file instead, open in
the child only (`--token-file /proc/self/fd/N`); other accounts cannot open another
user's /proc/PID/fd. Everything else is flower-superexec as it is:

    python -m zk0.ops.private_superexec <flower-superexec arguments>
"""

from __future__ import annotations

import os
import subprocess
import sys

from flwr.supercore.cli import flower_superexec
from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND, ExecutorType
from flwr.supercore.superexec import run_superexec
from flwr.supercore.superexec.executor import SubprocessExecutor, get_executor
from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult


def task_command(spec: ExecutionSpec, token_path: str) -> list[str]:
    """Flower's command line for the task (subprocess_executor.py), the token read from token_path."""
    args = [
        TASK_TYPE_TO_COMMAND[spec.task_type],
        TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
        spec.runtime_api_address,
        "--token-file",
        token_path,
    ]
    if spec.insecure:
        args.append("--insecure")
    elif spec.root_certificates_path is not None:
        args.extend(["--root-certificates", spec.root_certificates_path])
    if spec.parent_pid is not None:
        args.extend(["--parent-pid", str(spec.parent_pid)])
    if spec.runtime_dependency_install:
        args.append("--allow-runtime-dependency-installation")
    return args


class TokenFdExecutor(SubprocessExecutor):
    """Starts each task as Flower does, the token in a memfd instead of the command line."""

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        fd = os.memfd_create("flwr-task-token")
        try:
            os.write(fd, spec.token.encode())
            output = subprocess.DEVNULL if spec.suppress_output else None
            subprocess.Popen(  # noqa: S603  # pylint: disable=consider-using-with
                task_command(spec, f"/proc/self/fd/{fd}"), pass_fds=(fd,), stdout=output, stderr=output
            )
        finally:
            os.close(fd)
        return LaunchResult.accepted()


def _executor(executor_type, *args, **kwargs):
    if executor_type == ExecutorType.SUBPROCESS:
        return TokenFdExecutor()
    return get_executor(executor_type, *args, **kwargs)


def main() -> None:
    run_superexec.get_executor = _executor
    sys.argv[0] = "flower-superexec"
    flower_superexec()


if __name__ == "__main__":
    main()
