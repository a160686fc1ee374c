"""Joining a Ray cluster: the one rule for `--address`, shared by `csvr.prepare` and the studies.

    join_cluster("auto")                      # ray.init on $RAY_ADDRESS or the `ray start` cluster here
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


def join_cluster(address: str, **init_kwargs) -> None:
    """ray.init on the cluster `address` names, sending the cluster's token when one is on this machine."""
    import ray

    resolved = cluster_address(address)
    _use_token_if_present()
    ray.init(address=resolved, **init_kwargs)


def _use_token_if_present() -> None:
    """A cluster from `ray start` uses token authentication by default since Ray 2.59, and a driver only sends
    the token (from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) with RAY_AUTH_MODE=token.
    Turn it on when a token is there and the user chose no mode; a cluster without auth accepts it too."""
    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        os.path.exists(os.path.expanduser("~/.ray/auth_token"))
    if has_token and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # Ray read its config when it was imported: read it again with the new mode
        AuthenticationTokenLoader.instance().reset_cache()
