"""Two Ray nodes that share no sweep directory (tests/cluster_ns.py), and what that means for Tune.

First the separation itself: a file the driver writes under the private directory is invisible to
a task on the worker node, and the reverse; the shared directory is seen by both. Then Ray Tune on
that cluster with a trial pinned to the worker node: with ``storage_path`` a local directory of
the driver (what ``run_sweep`` does today) the trial fails at its first ``tune.report(checkpoint=)``
with Ray's storage validation error; with a directory both nodes mount, or with the loopback S3
server through orchestrator.storage, the same trial succeeds and the driver reads its checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import ray
from cluster_ns import NamespacedCluster, mount_namespace_unavailable
from ray import tune

from orchestrator.storage import Storage

# one pytest-xdist group for the modules that start multi-node Ray clusters (tests/conftest.py):
# two clusters at once on 2 cores, on the same loopback addresses, had a live worker node declared dead
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray_clusters")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """One cluster for the module, this process its driver; S3 credentials in every node's env."""
    if why := mount_namespace_unavailable():
        pytest.skip(why)
    base = tmp_path_factory.mktemp("ns")
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("AWS_") or k == "GLTH_S3_ENDPOINT"]:
            mp.delenv(k)
        for k, v in {**s3_server.env, "RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}.items():
            mp.setenv(k, v)
        with NamespacedCluster(base / "out", base / "shared", env=s3_server.env) as c, c.driver():
            yield c
    assert c.leftovers() == [], "processes of the cluster outlived stop()"


def _mount_ns() -> str:
    return os.readlink("/proc/self/ns/mnt")


@ray.remote(num_cpus=0)
def visit(private: str, shared: str, name: str) -> dict:
    """What this node sees in both directories, then leave a file named ``name`` in each."""
    seen = {
        "private": sorted(os.listdir(private)),
        "shared": sorted(os.listdir(shared)),
        "ns": _mount_ns(),
        "node": ray.get_runtime_context().get_node_id(),
    }
    for d in (private, shared):
        Path(d, f"{name}.txt").write_text(name)
    return seen


def test_worker_node_does_not_see_the_private_dir(cluster):
    private, shared = cluster.private_dir / "sep", cluster.shared_dir / "sep"
    private.mkdir()
    shared.mkdir()
    (private / "driver.txt").write_text("driver")
    (shared / "driver.txt").write_text("driver")
    worker = cluster.private_dir  # the worker lists its side of the mount point: sep/ is not there
    on_worker = ray.get(visit.options(resources={"worker": 1}).remote(str(worker), str(shared), "worker"))
    assert on_worker["node"] == cluster.worker_node_id() and on_worker["ns"] != _mount_ns()
    assert on_worker["private"] == [] and on_worker["shared"] == ["driver.txt"]
    # the worker's file: in the shared dir for all, in the private dir for the worker node only
    assert sorted(os.listdir(cluster.private_dir)) == ["sep"]
    assert (shared / "worker.txt").read_text() == "worker"
    again = ray.get(visit.options(resources={"worker": 1}).remote(str(worker), str(shared), "worker2"))
    assert again["private"] == ["worker.txt"]  # a real filesystem of its own, not a failed write
    # control: a task on the head node sees the driver's files
    on_head = ray.get(visit.options(resources={"head": 1}).remote(str(private), str(shared), "head"))
    assert on_head["ns"] == _mount_ns() and on_head["private"] == ["driver.txt"]
    assert on_head["shared"] == ["driver.txt", "worker.txt", "worker2.txt"]
    assert sorted(os.listdir(private)) == ["driver.txt", "head.txt"]


def _trial(config):
    """One round: mark the start (shared dir), report a checkpoint, mark the end."""
    marks = Path(config["marks"])
    (marks / "started").write_text(ray.get_runtime_context().get_node_id())
    with tempfile.TemporaryDirectory() as d:
        Path(d, "state.json").write_text(
            json.dumps({"round": 0, "node": ray.get_runtime_context().get_node_id(), "value": 12345})
        )
        tune.report({"round": 0}, checkpoint=tune.Checkpoint.from_directory(d))
    (marks / "reported").write_text("yes")


def _fit(marks: Path, storage_path: str, storage_filesystem=None):
    marks.mkdir(parents=True)
    pinned = tune.with_resources(_trial, tune.PlacementGroupFactory([{"CPU": 1, "worker": 1}]))
    tuner = tune.Tuner(
        pinned,
        param_space={"marks": str(marks)},
        run_config=tune.RunConfig(
            name="exp",
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    (result,) = list(tuner.fit())
    return result


def test_tune_with_a_local_storage_path_fails_on_the_worker_node(cluster):
    marks = cluster.shared_dir / "marks-local"
    result = _fit(marks, str(cluster.private_dir / "tune"))
    assert result.error is not None, "the trial should have failed"
    assert "not accessible by worker nodes" in str(result.error)
    assert (marks / "started").read_text() == cluster.worker_node_id()  # it ran on the worker...
    assert not (marks / "reported").exists()  # ...and failed at its first report
    assert (cluster.private_dir / "tune" / "exp" / ".validate_storage_marker").exists()  # the driver's, unseen
    assert not list((cluster.private_dir / "tune").rglob("checkpoint_*"))


def test_tune_with_shared_storage_succeeds_on_the_worker_node(cluster):
    marks = cluster.shared_dir / "marks-shared"
    storage = Storage.resolve(str(cluster.shared_dir / "runs"))
    result = _fit(marks, *storage.tune_storage("tune"))
    assert result.error is None, result.error
    assert (marks / "reported").read_text() == "yes"
    ckpt = Path(result.checkpoint.path)
    assert cluster.shared_dir / "runs" / "tune" / "exp" in ckpt.parents
    state = json.loads((ckpt / "state.json").read_text())  # read by the driver, written on the worker
    assert state == {"round": 0, "node": cluster.worker_node_id(), "value": 12345}


def test_tune_with_s3_storage_succeeds_on_the_worker_node(cluster, s3_server):
    marks = cluster.shared_dir / "marks-s3"
    bucket = s3_server.make_bucket()
    storage = Storage.resolve(f"s3://{bucket}/runs")
    storage.check_writable()
    result = _fit(marks, *storage.tune_storage("tune"))
    assert result.error is None, result.error
    assert (marks / "reported").read_text() == "yes"
    assert result.checkpoint.path.startswith(f"{bucket}/runs/tune/exp/")
    rel = result.checkpoint.path.removeprefix(f"{bucket}/runs/") + "/state.json"
    state = json.loads(storage.read_text(rel))
    assert state == {"round": 0, "node": cluster.worker_node_id(), "value": 12345}
    assert f"runs/{rel}" in s3_server.keys(bucket, "runs/tune/")  # seen by boto3 too
    assert not list(cluster.private_dir.rglob("state.json"))  # nothing went to the driver's disk


def test_worker_node_loss_and_a_fresh_worker(cluster):
    """The harness's node loss: the worker raylet killed by pid; a new worker has an empty private dir."""
    before = cluster.pids
    assert all(before.values())
    probe = visit.options(resources={"worker": 1})
    ray.get(probe.remote(str(cluster.private_dir), str(cluster.shared_dir), "old"))
    assert "old.txt" in ray.get(probe.remote(str(cluster.private_dir), str(cluster.shared_dir), "old"))["private"]
    old_node = cluster.worker_node_id()
    assert cluster.kill_worker_raylet() == before["worker_raylet"]
    assert len(cluster.wait_nodes(1, timeout=30)) == 1  # the GCS saw the node die
    cluster.start_worker()
    cluster.wait_nodes(2, timeout=60)
    after = cluster.pids
    assert after["worker_raylet"] != before["worker_raylet"] and after["head_raylet"] == before["head_raylet"]
    assert cluster.worker_node_id() != old_node
    fresh = ray.get(probe.remote(str(cluster.private_dir), str(cluster.shared_dir), "new"))
    assert fresh["private"] == [] and fresh["node"] == cluster.worker_node_id()
