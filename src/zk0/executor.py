"""A warm ClientApp executor: one long-lived process serves every message of a SuperNode.

Flower 1.42 starts a fresh `flwr-clientapp` process per message, so each message pays
the imports and the model load again. Started as `flower-supernode --isolation process`,
the SuperNode leaves its tasks pending on its Runtime API; this process claims them
(AcquireTask, as Flower's SuperExec does) and runs each one in-process, with the steps of
Flower's own `run_clientapp` (pull the task, install the FAB, load the ClientApp, run it,
turn an exception into Flower's error reply, push the reply and the task's status). What
stays warm between messages: torch, LeRobot and zk0's module-level caches (zk0.node keeps
one policy per process, and processors and open splits per run config and dataset).

A new FAB (another app version) drops the app's own modules, so its code is imported
afresh and its caches start empty; the heavy libraries stay loaded. Runtime dependency
installation is not supported: the app runs in this environment, as zk0 requires.

Flower internals used here are pinned by `flwr==1.42.0`; tests/test_executor.py breaks
when an upgrade changes them.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING

import httpx
from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.config import get_project_config, get_project_dir
from flwr.common.constant import MAX_RETRY_DELAY, ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore import log
from flwr.supercore.address import parse_address
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.auth.superexec_secret import add_superexec_auth_secret_args, load_superexec_auth_secret
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

# Idle polling of the SuperNode: quick right after a message (the next one often follows),
# then one request a second.
POLL_MIN_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
# A warm process claims a task as soon as the SuperNode creates it, before the SuperNode has
# fetched the message's objects from the SuperLink: retry those pulls quickly (Flower's
# one-shot process starts at 1 s and backs off to 10 s, which its start-up time hides).
PULL_INITIAL_BACKOFF_SECONDS = 0.05
PULL_BACKOFF_CAP_SECONDS = 1.0
# How long one Runtime API call of a task may keep retrying before the task is given up.
TASK_CALL_RETRY_SECONDS = 60.0
_RETRYABLE_STATUS = {httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT}
# As Flower's SuperExec: only AcquireTask is signed with the shared secret.
_ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"


class Stop(BaseException):
    """SIGINT/SIGTERM (or the parent's exit): finish cleanly, even in the middle of a task."""


@dataclass(frozen=True)
class Endpoint:
    """The SuperNode's Runtime API, as this executor reaches it."""

    address: str
    insecure: bool
    certificates: bytes | None = None
    auth_secret: bytes | None = None


@dataclass(frozen=True)
class Served:
    """One message served: what the operator's log line says."""

    run_id: int
    message_type: str
    server_round: str
    ok: bool
    detail: str
    seconds: float
    pull_seconds: float
    app_load_seconds: float

    def line(self) -> str:
        status = "ok" if self.ok else "error " + " ".join(self.detail.split())[:500]
        return (
            f"zk0-executor pid={os.getpid()} run={self.run_id} type={self.message_type} round={self.server_round} "
            f"seconds={self.seconds:.2f} pull={self.pull_seconds:.2f} app-load={self.app_load_seconds:.2f} "
            f"status={status}"
        )


def _server_round(message: Message | None) -> str:
    """The round a strategy put in the message's config (Flower's strategies send `server-round`)."""
    if message is None or not message.has_content():
        return "-"
    config = message.content.config_records.get("config")
    return str(config["server-round"]) if config is not None and "server-round" in config else "-"


def _task_retry_invoker() -> RetryInvoker:
    """Bounded retries for one task's calls; never signals the process (Flower's one-shot invoker does)."""

    def give_up(err: Exception) -> bool:
        return isinstance(err, httpx.HTTPStatusError) and err.response.status_code not in _RETRYABLE_STATUS

    return RetryInvoker(
        lambda: exponential(max_delay=MAX_RETRY_DELAY),
        (httpx.TransportError, httpx.HTTPStatusError),
        max_tries=None,
        max_time=TASK_CALL_RETRY_SECONDS,
        should_giveup=give_up,
    )


def _client(endpoint: Endpoint, interceptors: list, retry_invoker: RetryInvoker | None) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=endpoint.address,
        insecure=endpoint.insecure,
        root_certificates=endpoint.certificates,
        interceptors=interceptors,
        retry_invoker=retry_invoker,
    )


def _task_interceptors(token: str) -> list:
    return [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)]


def _heartbeat_fn(client: RuntimeHttpClient, run_label: str):
    """Keep the task's claim alive. A refused heartbeat (run stopped, claim expired) is logged,
    not turned into SIGINT as in Flower's one-shot process: the running ClientApp cannot be
    interrupted here, so it finishes and the SuperNode discards its reply."""
    request = SendTaskHeartbeatRequest()
    refused = False

    def beat() -> bool:
        nonlocal refused
        try:
            response = client.SendTaskHeartbeat(request)
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False  # HeartbeatSender retries with backoff
        if not response.success and not refused:
            refused = True
            log(WARNING, "zk0 executor: the SuperNode no longer accepts this task (%s); its reply will be discarded",
                run_label)
        return True

    return beat


class AppLoader:
    """Loads the ClientApp of a task's FAB; a new FAB drops the previous app's modules first."""

    def __init__(self) -> None:
        self.fab_hash: str | None = None
        self.package: str | None = None
        self._load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)

    def load(self, run: Run, fab: Fab) -> ClientApp:
        install_from_fab(fab.content, skip_prompt=True)
        if self.fab_hash not in (None, fab.hash_str):
            self._forget_app_modules()
        project = get_project_config(get_project_dir(run.fab_id, run.fab_version, fab.hash_str))
        self.package = project["tool"]["flwr"]["app"]["components"]["clientapp"].split(":")[0].split(".")[0]
        self.fab_hash = fab.hash_str
        return self._load(run.fab_id, run.fab_version, fab.hash_str)

    def _forget_app_modules(self) -> None:
        """As a fresh process would: the app's modules (and their caches, the model) are imported anew."""
        prefix = f"{self.package}."
        for name in [n for n in sys.modules if (n == self.package or n.startswith(prefix)) and n != __name__]:
            del sys.modules[name]
        gc.collect()
        log(INFO, "zk0 executor: new app version; reloading package '%s'", self.package)


def _error_reply(message: Message | None, ex: Exception) -> tuple[Message | None, str]:
    """Flower's error reply for a failed ClientApp, exactly as run_clientapp builds it."""
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    reason = str(type(ex)) + ":<'" + str(ex) + "'>"
    if isinstance(ex, LoadClientAppError):
        reason = "An exception was raised when attempting to load `ClientApp`"
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    log(ERROR, "ClientApp raised an exception", exc_info=ex)
    reply = Message(Error(code=code, reason=reason), reply_to=message) if message else None
    return reply, reason


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run, Fab]:
    """Flower's run_clientapp.pull_task_input (flwr 1.42.0), with the quick object-pull backoff above."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    object_tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        object_tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        initial_backoff=PULL_INITIAL_BACKOFF_SECONDS,
        backoff_cap=PULL_BACKOFF_CAP_SECONDS,
    )
    # The deflated message does not carry its own id (its object id)
    message.metadata.__dict__["_message_id"] = object_tree.object_id
    return message, context, run, fab


def serve_task(endpoint: Endpoint, token: str, run_id: int, loader: AppLoader) -> Served:
    """Run the task claimed with `token` in this process and leave its reply with the SuperNode."""
    started = time.perf_counter()
    retry_invoker = _task_retry_invoker()
    client = _client(endpoint, _task_interceptors(token), retry_invoker)
    beat_client = _client(endpoint, _task_interceptors(token), None)
    heartbeat = HeartbeatSender(_heartbeat_fn(beat_client, f"run {run_id}"))
    heartbeat.start()
    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    pull_seconds = app_load_seconds = 0.0
    try:
        message, context, run, fab = pull_task_input(client)
        pulled = time.perf_counter()
        pull_seconds = pulled - started
        app = loader.load(run, fab)
        app_load_seconds = time.perf_counter() - pulled
        reply = app(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # pylint: disable=broad-exception-caught
        reply, details = _error_reply(message, ex)
    except Stop:
        # Answer now rather than leave the SuperNode waiting for the claim to expire.
        details = "zk0 executor stopped while running this message"
        reply = Message(Error(code=ErrorCode.CLIENT_APP_CRASHED, reason=details), reply_to=message) if message else None
        raise
    finally:
        if reply is not None and context is not None:
            try:
                push_message(client, reply, context)
            except Exception as ex:  # pylint: disable=broad-exception-caught
                log(ERROR, "zk0 executor: failed to push the reply to the SuperNode", exc_info=ex)
                sub_status, details = SubStatus.FAILED, f"pushing the reply failed: {ex}"
        retry_invoker.max_tries = 1  # the status report is best effort, as in run_clientapp's exit
        push_task_output(client, context, sub_status, details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
        beat_client.close()
    return Served(
        run_id=run_id,
        message_type=message.metadata.message_type if message else "?",
        server_round=_server_round(message),
        ok=sub_status == SubStatus.COMPLETED,
        detail=details,
        seconds=time.perf_counter() - started,
        pull_seconds=pull_seconds,
        app_load_seconds=app_load_seconds,
    )


def serve(endpoint: Endpoint) -> None:
    """Claim and serve the SuperNode's ClientApp tasks one after another, until stopped."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if endpoint.auth_secret:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=endpoint.auth_secret, protected_methods={_ACQUIRE_TASK_METHOD})
        )
    poller = _client(endpoint, interceptors, None)
    loader = AppLoader()
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    print(f"zk0-executor pid={os.getpid()} serving ClientApp tasks of the SuperNode at {endpoint.address}", flush=True)
    wait, reachable = POLL_MIN_SECONDS, True
    try:
        while True:
            try:
                claimed = poller.AcquireTask(request)
            except httpx.TransportError as err:
                if reachable:
                    log(WARNING, "zk0 executor: SuperNode at %s not reachable (%s); retrying", endpoint.address, err)
                reachable = False
                time.sleep(POLL_MAX_SECONDS)
                continue
            except httpx.HTTPStatusError as err:
                if err.response.status_code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
                    sys.exit(
                        f"zk0 executor: the SuperNode at {endpoint.address} refused to hand out tasks "
                        f"(HTTP {err.response.status_code}); pass the SuperNode's secret with --superexec-auth-secret-file"
                    )
                log(WARNING, "zk0 executor: the SuperNode answered HTTP %d; retrying", err.response.status_code)
                time.sleep(POLL_MAX_SECONDS)
                continue
            if not reachable:
                log(INFO, "zk0 executor: SuperNode at %s reachable again", endpoint.address)
                reachable = True
            if claimed.HasField("task") and claimed.token:
                served = serve_task(endpoint, claimed.token, claimed.task.run_id, loader)
                print(served.line(), flush=True)
                wait = POLL_MIN_SECONDS
                continue
            time.sleep(wait)
            wait = min(wait * 2, POLL_MAX_SECONDS)
    except Stop:
        print(f"zk0-executor pid={os.getpid()} stopped", flush=True)
    finally:
        poller.close()


def _stop(_signum, _frame) -> None:
    raise Stop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zk0.executor",
        description="Serve a SuperNode's ClientApp messages from one warm process. "
        "Start the SuperNode with `flower-supernode --isolation process --port PORT ...`.",
    )
    parser.add_argument("--runtime-api-address", required=True, metavar="HOST:PORT",
                        help="the SuperNode's Runtime API (its --host and --port; e.g. 127.0.0.1:9094)")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP to the Runtime API (what a SuperNode started without --ssl-certfile serves)")
    parser.add_argument("--root-certificates", metavar="ROOT_CERT",
                        help="CA certificate of a Runtime API served with TLS (the SuperNode's --ssl-ca-certfile)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    add_superexec_auth_secret_args(parser)
    return parser


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """The Runtime API endpoint from the command line; exits with one line when it is unusable."""
    if parse_address(args.runtime_api_address) is None:
        sys.exit(f"zk0 executor: --runtime-api-address must be HOST:PORT, got '{args.runtime_api_address}'")
    if not args.insecure and args.root_certificates is None:
        sys.exit("zk0 executor: pass --insecure (SuperNode Runtime API over plain HTTP) or --root-certificates CA")
    try:
        secret = load_superexec_auth_secret(args.superexec_auth_secret_file)
    except ValueError as err:
        sys.exit(f"zk0 executor: {err}")
    certificates = validate_and_resolve_root_certificates(args.root_certificates, args.insecure)
    return Endpoint(args.runtime_api_address, args.insecure, certificates, secret)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    endpoint = endpoint_from_args(args)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # raises SIGINT in this process when the parent is gone
    serve(endpoint)


if __name__ == "__main__":
    main()
