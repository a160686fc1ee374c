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
    """ray.init on the cluster `address` names. A cluster from `ray start` uses token authentication when a
    token exists (Ray >= 2.59), and a driver only sends its token with RAY_AUTH_MODE=token: if joining fails,
    a token is on this machine and the user chose no mode, try once more in token mode."""
    import ray

    resolved = cluster_address(address)
    try:
        ray.init(address=resolved, **init_kwargs)
    except ConnectionError as err:
        if "RAY_AUTH_MODE" in os.environ or not _token_available():
            raise
        _token_mode()
        try:
            ray.init(address=resolved, **init_kwargs)
        except ConnectionError:
            raise ConnectionError(f"{err}; also tried with Ray token authentication (RAY_AUTH_MODE=token and "
                                  "the token in ~/.ray/auth_token or RAY_AUTH_TOKEN)") from None


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.path.exists(os.path.expanduser("~/.ray/auth_token")))


def _token_mode() -> None:
    """Send the token from now on (Ray read its config when it was imported: make it read it again)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
