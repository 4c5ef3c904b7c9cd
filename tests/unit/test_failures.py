"""zk0.util.failures.one_line: a node's failure, as Flower and Ray deliver it, becomes its own line."""

from __future__ import annotations

from pathlib import Path

from zk0.util.failures import one_line

DATASET_ERROR = "dataset local:/x: directory does not exist; pass the root of a LeRobot dataset"

# An error reply's reason under simulation, as Ray and Flower 1.42 build it (shortened tracebacks).
RAY_REASON = f"""<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=7720, ip=192.0.2.2, actor_id=154846053f1d, repr=<flwr.simulation.ray_transport.ray_actor.ClientAppActor object at 0x7fd5f74c3c10>)
                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/src/zk0/data/dataset.py", line 51, in load_metadata
    raise DatasetError(f"dataset {{uri}}: directory does not exist; pass the root of a LeRobot dataset")
zk0.data.dataset.DatasetError: {DATASET_ERROR}

The above exception was the direct cause of the following exception:

\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=7720, ip=192.0.2.2, actor_id=154846053f1d)
  File "/venv/lib/python3.11/site-packages/flwr/simulation/ray_transport/ray_actor.py", line 65, in run
    raise ClientAppException(str(ex)) from ex
flwr.clientapp.client_app.ClientAppException: 
Exception ClientAppException occurred. Message: {DATASET_ERROR}'>"""


def test_ray_wrapped_zk0_error_is_its_own_line():
    assert one_line(RAY_REASON) == f"DatasetError: {DATASET_ERROR}"


def test_ray_wrapped_foreign_error_is_flowers_message():
    reason = RAY_REASON.replace(f"zk0.data.dataset.DatasetError: {DATASET_ERROR}", "RuntimeError: CUDA out of memory")
    reason = reason.replace(f"Message: {DATASET_ERROR}'>", "Message: CUDA out of memory'>")
    assert one_line(reason) == "CUDA out of memory"


def test_deployment_reason_names_the_class_and_message():
    assert one_line(f"<class 'zk0.data.dataset.DatasetError'>:<'{DATASET_ERROR}'>") == f"DatasetError: {DATASET_ERROR}"


# A simulation actor's death as Flower 1.42 reports it (Ray 2.55's ActorDiedError text, shortened).
ACTOR_DIED = """<class 'ray.exceptions.ActorDiedError'>:<'The actor died unexpectedly before finishing this task.
\tclass_name: ClientAppActor
\tactor_id: 0f5c1d2c4b7a6e3f
\tpid: 4242
\tip: 192.0.2.2
The actor is dead because its worker process has died. Worker exit type: {exit}'>"""
MEMORY_MONITOR = (
    "NODE_OUT_OF_MEMORY Worker exit detail: Task was killed due to the node running low on memory.\n"
    "Memory on the node (IP: 192.0.2.2, ID: 5e1f) was 21.93GB / 23.08GB (0.950172), which exceeds the memory usage "
    "threshold of 0.95; Object store memory usage: [...]; Ray killed 1 worker(s) based on the killing policy: "
    "[group_by_owner]; Top 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n4242\t0.57\tray::ClientAppActor.run\n"
    "Refer to the documentation on how to address the out of memory issue: https://docs.ray.io/"
)
SIGNALLED = ("UNEXPECTED_SYSTEM_EXIT Worker exit detail: Worker unexpectedly exits with a connection error code 2. "
             "End of file. There are some potential root causes. (1) The process is killed by SIGKILL by OOM killer")


def test_an_actor_killed_by_rays_memory_monitor_is_one_line_with_the_knob():
    line = one_line(ACTOR_DIED.format(exit=MEMORY_MONITOR))
    assert line.startswith("ActorKilled: Ray's memory monitor killed this node's simulation actor: the machine used "
                           "21.93 of 23.08 GB (95%), above RAY_memory_usage_threshold 0.95;"), line
    assert "--actors" in line and "Top 10" not in line and "\n" not in line


def test_an_actor_killed_otherwise_names_the_signal_and_the_knob():
    line = one_line(ACTOR_DIED.format(exit=SIGNALLED))
    assert line.startswith("ActorKilled: this node's simulation actor was killed (a signal"), line
    assert "RAY_memory_usage_threshold" in line and "--actors" in line


def test_plain_reasons_pass_unchanged_and_long_ones_lose_their_middle():
    """A cut keeps the reason's start and its end, where zk0's reasons say what to do."""
    assert one_line("no reply within round-timeout (3600s)") == "no reply within round-timeout (3600s)"
    cut = one_line("refused: " + "x" * 1000 + "; run the fix", limit=50)
    assert len(cut) == 50 and cut.startswith("refused: x") and cut.endswith("x; run the fix") and cut.count("…") == 1
    assert one_line("") == ""


def refusal(fab: bytes = b"a FAB of the upgraded server", differing: int = 12) -> tuple[str, str]:
    """The reason a node's executor sends for a FAB of a zk0 it has not installed (a server that
    upgraded first), in trust.py's own words, and the FAB's digest."""
    import hashlib

    from zk0_executor.trust import AppPolicy, RefusedApp

    class Upgraded(AppPolicy):
        def differences(self, fab: bytes) -> list[str]:
            return [f"src/zk0/server/module_{n}.py differs from the installed one" for n in range(differing)]

    try:
        Upgraded(Path("/nonexistent")).check(fab, "zk0/zk0", "0.1.0")
    except RefusedApp as refused:
        return str(refused), hashlib.sha256(fab).hexdigest()
    raise AssertionError("the FAB was not refused")


def test_a_refused_fab_reaches_the_server_whole_with_its_fix():
    """The executor's reason for an upgraded server's FAB, as the server turns a node's error
    reply into its line: one line, whole, ending with the fix and the hash to allow."""
    reason, digest = refusal()
    assert one_line(reason) == reason and "\n" not in reason
    assert reason.endswith(f"; if the server upgraded zk0, run 'zk0bot upgrade' on this node (or allow this FAB "
                           f"with --allow-app {digest})"), reason


def test_a_run_ended_by_refused_nodes_logs_one_line_per_reason_and_no_traceback(tmp_path, demo_roots):
    """Every node refuses the app (the executor's INVALID_FAB reply): the ServerApp fails with
    zk0's one line naming each node's reason, and Flower's own log of the exception that ended
    the ServerApp (as flwr-serverapp logs it) carries no traceback after it."""
    import io
    import logging

    from flwr.app import Context, Error, Message, RecordDict
    from flwr.common import log
    from flwr.common.constant import ErrorCode
    from test_aggregation import LocalGrid, pyproject_run_config

    from zk0 import server_app
    from zk0.client_app import app as zk0_client_app

    reason, digest = refusal()

    class RefusingGrid(LocalGrid):
        def _deliver(self, message: Message) -> Message:
            return Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message)

    config = pyproject_run_config(model="tiny", datasets=",".join(f"local:{r}" for r in demo_roots[:-1]),
                                  eval_dataset=f"local:{demo_roots[-1]}", device="cpu", num_workers=0,
                                  node_wait_timeout=5.0, output_dir=str(tmp_path))
    grid = RefusingGrid(zk0_client_app, {8101: {}, 8102: {}}, config)
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    logging.getLogger("flwr").addHandler(handler)
    try:
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    except Exception as ex:  # as flwr-serverapp (and the simulation) log the exception that ended the app
        log(logging.ERROR, "%s raised an exception", "ServerApp", exc_info=ex)
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    lines = text.getvalue().splitlines()
    assert "Traceback" not in text.getvalue(), lines
    assert [line for line in lines if line.startswith("Round 0: node")] == [
        f"Round 0: node 8101: {reason}", f"Round 0: node 8102: {reason}"]
    assert lines[-1] == "ServerApp raised an exception"
    # Two reasons do not fit the run's last line: it keeps the first's start and the last's fix.
    assert lines[-2].startswith(f"zk0: error: only 0 node(s) reported usable normalization statistics, "
                                f"min-train-clients is 2: node 8101: refused: FAB sha256 {digest}"), lines[-2]
    assert lines[-2].endswith(f"run 'zk0bot upgrade' on this node (or allow this FAB with --allow-app {digest})")


def test_the_engines_record_of_a_failed_node_goes_to_the_debug_log_not_server_log(tmp_path):
    """Flower's simulation engine logs a failed message in full (Ray's memory report, tracebacks):
    server.log keeps zk0's one line, debug.log the engine's record."""
    import logging

    from zk0.util.logs import run_log

    logger = logging.getLogger("flwr")
    engine = logger.makeRecord("flwr", logging.ERROR, "/venv/flwr/server/superlink/fleet/vce/vce_api.py", 143,
                               "The actor died unexpectedly ... Top 10 memory users", (), None)
    with run_log(tmp_path / "server.log", tmp_path / "debug.log"):
        logger.handle(engine)
        logger.warning("Round 1: node 7 failed: ActorKilled: ...")
        logger.warning("A simulation actor died; a fresh one replaces it in the pool", extra={"zk0_debug": True})
    server_log, debug_log = (tmp_path / "server.log").read_text(), (tmp_path / "debug.log").read_text()
    assert "Round 1: node 7 failed" in server_log and "Top 10" not in server_log and "fresh one" not in server_log
    assert "Top 10 memory users" in debug_log and "fresh one" in debug_log and "Round 1" not in debug_log


def test_no_debug_log_when_no_node_failed(tmp_path):
    import logging

    from zk0.util.logs import run_log

    with run_log(tmp_path / "server.log", tmp_path / "debug.log"):
        logging.getLogger("flwr").warning("a warning of the run")
    assert not (tmp_path / "debug.log").exists()
