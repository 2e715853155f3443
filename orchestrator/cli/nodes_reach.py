"""A connected driver's check that every alive Ray node reads what it writes to the sweep's storage
(``check_nodes_reach``): a directory of the driver's machine only, or an S3 prefix a node has no
credentials for, is refused in one line before any trial runs."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from orchestrator.cli.common import BadInput


def _node_reads(storage, name: str, token: str) -> tuple[str, str | None]:
    """On one node: (its address, None if it reads ``token`` from ``name`` in ``storage``, else why not)."""
    import ray

    from orchestrator.storage_check import aws_cause

    ip = ray.util.get_node_ip_address()
    try:
        seen = storage.read_text(name)
    except FileNotFoundError:
        return (
            ip,
            "does not see what this driver wrote there (a directory of this machine only, not one every node mounts)",
        )
    except OSError as e:
        return ip, f"cannot read it: {aws_cause(e)}"
    return ip, None if seen == token else "reads other content there than this driver wrote"


def _answers(done) -> tuple[list[tuple[str, str | None]], int]:
    """The probes' answers, and how many could not run because their node left the cluster between
    ``ray.nodes()`` and the probe (a node that is gone runs no trial either: not a storage problem)."""
    import ray
    from ray.exceptions import NodeDiedError, TaskUnschedulableError

    answers, gone = [], 0
    for ref in done:
        try:
            answers.append(ray.get(ref))
        except (TaskUnschedulableError, NodeDiedError):
            gone += 1
    return answers, gone


def check_nodes_reach(storage, setting: str = "storage", timeout_s: float = 120.0) -> None:
    """A connected driver's check that every alive Ray node reads a file it writes to ``storage``
    (one zero-CPU task per node): a local directory of the driver's machine, or an S3 prefix a
    node has no credentials for, is refused in one line before any trial runs. The probe file is
    removed again (and the storage root, if this made it). Nodes that join later (an autoscaler's)
    are not checked."""
    import secrets

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    name = f".glth-reach-{token}"
    made_root = storage.is_local and not Path(storage.root).exists()
    storage.write_text(name, token)
    try:
        probe = ray.remote(_node_reads)
        refs = [
            probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(storage, name, token)
            for n in ray.nodes()
            if n["Alive"]
        ]
        done, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answers, gone = _answers(done)
        bad = [(ip, why) for ip, why in answers if why]
        if late or gone:
            print(
                f"[glth] {len(late) + gone} Ray node(s) did not answer the storage check "
                f"({len(late)} in {timeout_s:g} s, {gone} left the cluster meanwhile); going on",
                file=sys.stderr,
            )
    finally:
        storage.delete(name)
        if made_root:
            with contextlib.suppress(OSError):
                Path(storage.root).rmdir()
    if bad:
        nodes = ", ".join(sorted({ip for ip, _ in bad}))
        raise BadInput(
            f"{setting}: {storage.uri}: Ray node {nodes} {bad[0][1]}; on a cluster use a filesystem "
            f"every node mounts or s3://"
        )


# -- the dry run ------------------------------------------------------------------------------
