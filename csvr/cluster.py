"""Joining a Ray cluster: the one rule for `--address`, shared by `csvr.prepare` and the studies.

    ray.init(address=cluster_address("auto"))
"""
from __future__ import annotations

import os


class NoClusterError(ConnectionError):
    """--address auto found no cluster on this node; the message says how to start one."""


def cluster_address(address: str) -> str:
    """--address auto = $RAY_ADDRESS or the cluster `ray start` last started on this node. Ray's own fallback
    (any Ray process found on the machine) could join another user's local Ray, so it is not used."""
    import ray._private.utils

    if address != "auto":
        return address
    found = os.environ.get("RAY_ADDRESS") or ray._private.utils.read_ray_address()
    if not found:
        raise NoClusterError("--address auto: no Ray cluster found on this node (RAY_ADDRESS is unset and "
                             "`ray start --head` has not run here); start one with `ray start --head`, pass "
                             "--address HEAD_IP:6379, or drop --address to run on a local Ray")
    return found
