"""Every Flower name the executor uses, in one place: a Flower upgrade touches this file only.

Only `flwr.app` and `ClientApp` are public Flower API; the rest is the internals of Flower's
one-shot ClientApp process (flwr/supernode/runtime/run_clientapp.py) and of its SuperExec
(flwr/supercore/superexec/run_superexec.py), pinned by `flwr==1.42.0`. The helpers below
repeat what those two build (the interceptors of each Runtime API client, the task's
input, the error reply); tests/system/test_executor.py compares them with Flower's source and
fails when an upgrade changes what Flower does or uses.

With an upstream warm ClientApp mode (flwrlabs/flower#3670: a SuperNode that keeps one
ClientApp process and hands it message after message) this module, the task loop in
zk0_executor.serve and its drift guard would go: the SuperNode would start the process,
claim tasks, send heartbeats and push replies itself. What would stay is zk0's own part:
the check that a FAB is the installed zk0 (zk0_executor.trust), done where Flower loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import ERROR

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
    AcquireTaskResponse,
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
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    ObjectUnavailableError,
    pull_and_inflate_object_from_tree,
)
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

__all__ = [  # what the executor's other modules take from here
    "MAX_RETRY_DELAY", "AcquireTaskRequest", "AcquireTaskResponse", "ClientApp", "Context", "ErrorCode", "Fab",
    "HeartbeatSender", "Message", "RetryInvoker", "Run", "RuntimeHttpClient", "SendTaskHeartbeatRequest", "SubStatus", "TaskType",
    "add_superexec_auth_secret_args", "error_message", "error_reply", "exponential", "get_load_client_app_fn",
    "get_project_config", "get_project_dir", "install_from_fab", "load_superexec_auth_secret", "log",
    "parse_address", "pull_task_input", "push_message", "push_task_output", "start_parent_process_monitor",
    "superexec_interceptors", "task_interceptors", "validate_and_resolve_root_certificates",
]

# As Flower's SuperExec: only AcquireTask is signed with the shared secret.
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"


def superexec_interceptors(auth_secret: bytes | None) -> list:
    """The interceptors of Flower's SuperExec client (run_superexec): tracing, version, and the secret's signature."""
    interceptors = [RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if auth_secret:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=auth_secret, protected_methods={ACQUIRE_TASK_METHOD})
        )
    return interceptors


def task_interceptors(token: str) -> list:
    """The interceptors of Flower's ClientApp client (run_clientapp): tracing, version, the task's token."""
    return [
        RuntimeTracingInterceptor(),
        RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
        RuntimeTokenHttpInterceptor(token),
    ]


def error_reply(message: Message | None, ex: Exception) -> tuple[Message | None, str]:
    """Flower's error reply for a failed ClientApp, exactly as run_clientapp builds it."""
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    reason = str(type(ex)) + ":<'" + str(ex) + "'>"
    if isinstance(ex, LoadClientAppError):
        reason = "An exception was raised when attempting to load `ClientApp`"
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    log(ERROR, "ClientApp raised an exception", exc_info=ex)
    return error_message(message, code, reason), reason


def error_message(message: Message | None, code: int, reason: str) -> Message | None:
    """An error reply to `message` (none when the message never arrived)."""
    return Message(Error(code=code, reason=reason), reply_to=message) if message else None


def pull_task_input(
    client: RuntimeHttpClient, initial_backoff: float, backoff_cap: float, max_time: float,
    dropped: Callable[[], bool],
) -> tuple[Message, Context, Run, Fab]:
    """Flower's run_clientapp.pull_task_input (flwr 1.42.0), with the object pulls' backoff and
    time limit as arguments, given up as soon as `dropped()` says, while an object is still
    unavailable, that the SuperNode has dropped the message."""
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
        _unless_dropped(make_pull_object_fn_protobuf(client.PullObject, node, context.run_id), dropped),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        initial_backoff=initial_backoff,
        backoff_cap=backoff_cap,
        max_time=max_time,
    )
    # The deflated message does not carry its own id (its object id)
    message.metadata.__dict__["_message_id"] = object_tree.object_id
    return message, context, run, fab


def _unless_dropped(pull_object: Callable[[str], bytes], dropped: Callable[[], bool]) -> Callable[[str], bytes]:
    """Flower's object pull, failing for good instead of retrying once the message is dropped."""

    def pull(object_id: str) -> bytes:
        try:
            return pull_object(object_id)
        except ObjectUnavailableError:
            if dropped():
                raise ObjectPullError(object_id, "the SuperNode dropped this message and handed out a newer task "
                                                 "(its run ended while the message was fetched)") from None
            raise

    return pull
