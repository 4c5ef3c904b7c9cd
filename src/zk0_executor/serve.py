"""The executor's task loop: claim a SuperNode's ClientApp tasks and run each in this process.

Started as `flower-supernode --isolation process`, the SuperNode leaves its tasks pending on
its Runtime API; this process claims them (AcquireTask, as Flower's SuperExec does) and runs
each one in-process, with the steps of Flower's own `run_clientapp` (pull the task, install
the FAB, load the ClientApp, run it, turn an exception into Flower's error reply, push the
reply and the task's status), after one step of its own: a FAB that is not the installed
zk0 (zk0_executor.trust) gets an error reply and is never installed.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING

import httpx

from zk0_executor.flower import (
    MAX_RETRY_DELAY,
    AcquireTaskRequest,
    AcquireTaskResponse,
    ClientApp,
    Context,
    ErrorCode,
    Fab,
    HeartbeatSender,
    Message,
    RetryInvoker,
    Run,
    RuntimeHttpClient,
    SendTaskHeartbeatRequest,
    SubStatus,
    TaskType,
    error_message,
    error_reply,
    exponential,
    get_load_client_app_fn,
    get_project_config,
    get_project_dir,
    install_from_fab,
    log,
    pull_task_input,
    push_message,
    push_task_output,
    superexec_interceptors,
    task_interceptors,
)
from zk0_executor.trust import AppPolicy, RefusedApp

# Idle polling of the SuperNode: quick right after a message (the next one often follows),
# then one request a second.
POLL_MIN_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
# A warm process claims a task as soon as the SuperNode creates it, before the SuperNode has
# fetched the message's objects from the SuperLink: retry those pulls quickly (Flower's
# one-shot process starts at 1 s and backs off to 10 s, which its start-up time hides).
PULL_INITIAL_BACKOFF_SECONDS = 0.05
PULL_BACKOFF_CAP_SECONDS = 1.0
# How long a claimed message's objects may stay unavailable. When a run stops while the
# SuperNode fetches a message, Flower 1.42's SuperNode drops the message but leaves its task
# open: the objects never come (Flower's default of 2 hours wedged the node that long). The
# next run's task ends that wait at once (Tasks.dropped); this bounds it when none comes, and
# still lets a slow link fetch a real-size broadcast (60 MB at 0.2 MB/s).
PULL_MAX_SECONDS = 300.0
# While a claimed message's objects are unavailable, how often to ask the SuperNode for a newer
# task (Tasks.dropped).
DROPPED_PROBE_SECONDS = 5.0
# How long one Runtime API call of a task may keep retrying before the task is given up.
TASK_CALL_RETRY_SECONDS = 60.0
_RETRYABLE_STATUS = {httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT}


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
        # Room for a refused FAB's whole line (about 500 characters), which ends with the fix.
        status = "ok" if self.ok else "error " + " ".join(self.detail.split())[:1000]
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


class Tasks:
    """The SuperNode's pending tasks, claimed one at a time, and the sign that the task being
    served has been dropped.

    Flower 1.42's SuperNode receives one message at a time: it creates the message's task, then
    fetches its objects, then waits for the reply before receiving the next. When the run stops
    while it fetches, it drops the message but leaves the task open, and the objects never come
    (PULL_MAX_SECONDS would hold the node that long). A newer task can only exist once the
    SuperNode has moved past the current message: claiming one while the current message's
    objects are unavailable proves the message dropped. That task is served next."""

    def __init__(self, poller: RuntimeHttpClient) -> None:
        self.poller = poller
        self.request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        self._ahead: AcquireTaskResponse | None = None
        self._asked = 0.0
        self._lock = threading.Lock()

    def claim(self) -> AcquireTaskResponse:
        """The task claimed ahead, else the SuperNode's answer to AcquireTask (which may hold none)."""
        with self._lock:
            claimed, self._ahead = self._ahead, None
            self._asked = time.monotonic()  # a new message's objects get DROPPED_PROBE_SECONDS first
        return claimed if claimed is not None else self.poller.AcquireTask(self.request)

    def dropped(self) -> bool:
        """Called by the current task's object pulls while an object is unavailable."""
        with self._lock:
            if self._ahead is not None:
                return True
            if time.monotonic() - self._asked < DROPPED_PROBE_SECONDS:
                return False
            self._asked = time.monotonic()
            try:
                claimed = self.poller.AcquireTask(self.request)
            except (httpx.TransportError, httpx.HTTPStatusError):
                return False
            if claimed.HasField("task") and claimed.token:
                self._ahead = claimed
            return self._ahead is not None


class AppLoader:
    """Loads the ClientApp of a task's FAB once `policy` accepts it; a new FAB drops the previous
    app's modules first."""

    def __init__(self, policy: AppPolicy) -> None:
        self.policy = policy
        self.fab_hash: str | None = None
        self.package: str | None = None
        self._sys_path = list(sys.path)  # Flower's loader puts each FAB's directory in front
        self._load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)

    def load(self, run: Run, fab: Fab) -> ClientApp:
        """The FAB's ClientApp; raises RefusedApp (before anything is installed) for a FAB the policy refuses."""
        allowed = self.policy.check(fab.content, run.fab_id, run.fab_version)
        install_from_fab(fab.content, skip_prompt=True)
        if allowed and fab.hash_str != self.fab_hash:
            log(INFO, "zk0 executor: running FAB sha256 %s (%s %s), allowed by --allow-app",
                hashlib.sha256(fab.content).hexdigest(), run.fab_id, run.fab_version)
        if self.fab_hash not in (None, fab.hash_str):
            self._forget_app_modules()
        project = get_project_config(get_project_dir(run.fab_id, run.fab_version, fab.hash_str))
        self.package = project["tool"]["flwr"]["app"]["components"]["clientapp"].split(":")[0].split(".")[0]
        self.fab_hash = fab.hash_str
        return self._load(run.fab_id, run.fab_version, fab.hash_str)

    def _forget_app_modules(self) -> None:
        """As a fresh process would: the app's modules (and their caches, the model) are imported anew,
        and no earlier FAB's directory stays on the import path."""
        prefix = f"{self.package}."
        for name in [n for n in sys.modules if (n == self.package or n.startswith(prefix))]:
            del sys.modules[name]
        sys.path[:] = self._sys_path
        gc.collect()
        log(INFO, "zk0 executor: new app version; reloading package '%s'", self.package)


def serve_task(endpoint: Endpoint, token: str, run_id: int, loader: AppLoader, dropped: Callable[[], bool]) -> Served:
    """Run the task claimed with `token` in this process and leave its reply with the SuperNode."""
    started = time.perf_counter()
    retry_invoker = _task_retry_invoker()
    client = _client(endpoint, task_interceptors(token), retry_invoker)
    beat_client = _client(endpoint, task_interceptors(token), None)
    heartbeat = HeartbeatSender(_heartbeat_fn(beat_client, f"run {run_id}"))
    heartbeat.start()
    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    pull_seconds = app_load_seconds = 0.0
    try:
        message, context, run, fab = pull_task_input(
            client, PULL_INITIAL_BACKOFF_SECONDS, PULL_BACKOFF_CAP_SECONDS, PULL_MAX_SECONDS, dropped)
        pulled = time.perf_counter()
        pull_seconds = pulled - started
        app = loader.load(run, fab)
        app_load_seconds = time.perf_counter() - pulled
        reply = app(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except RefusedApp as refused:
        details = str(refused)
        reply = error_message(message, ErrorCode.INVALID_FAB, details)
    except Exception as ex:  # pylint: disable=broad-exception-caught
        reply, details = error_reply(message, ex)
    except Stop:
        # Answer now rather than leave the SuperNode waiting for the claim to expire.
        details = "zk0 executor stopped while running this message"
        reply = error_message(message, ErrorCode.CLIENT_APP_CRASHED, details)
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


def serve(endpoint: Endpoint, policy: AppPolicy) -> None:
    """Claim and serve the SuperNode's ClientApp tasks one after another, until stopped."""
    poller = _client(endpoint, superexec_interceptors(endpoint.auth_secret), None)
    loader = AppLoader(policy)
    tasks = Tasks(poller)
    allowed = f" and {len(policy.allowed)} FAB(s) allowed by hash" if policy.allowed else ""
    print(f"zk0-executor pid={os.getpid()} serving ClientApp tasks of the SuperNode at {endpoint.address}: "
          f"the zk0 installed at {policy.installed}{allowed}", flush=True)
    wait, reachable = POLL_MIN_SECONDS, True
    try:
        while True:
            try:
                claimed = tasks.claim()
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
                served = serve_task(endpoint, claimed.token, claimed.task.run_id, loader, tasks.dropped)
                print(served.line(), flush=True)
                wait = POLL_MIN_SECONDS
                continue
            time.sleep(wait)
            wait = min(wait * 2, POLL_MAX_SECONDS)
    except Stop:
        print(f"zk0-executor pid={os.getpid()} stopped", flush=True)
    finally:
        poller.close()
