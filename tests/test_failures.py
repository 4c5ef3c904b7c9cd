"""zk0.util.failures.one_line: a node's failure, as Flower and Ray deliver it, becomes its own line."""

from __future__ import annotations

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


def test_plain_reasons_pass_unchanged_and_long_ones_are_cut():
    assert one_line("no reply within round-timeout (3600s)") == "no reply within round-timeout (3600s)"
    cut = one_line("x" * 1000, limit=50)
    assert len(cut) == 50 and cut.endswith("…")
    assert one_line("") == ""
