"""The Ray a sweep runs on: a cluster's (``--address`` / RAY_ADDRESS), or a local one that glth
starts on 127.0.0.1 with token authentication and stops afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets

#: the local Ray's token, random, one per process
_LOCAL_TOKEN = secrets.token_urlsafe(32)


@contextlib.contextmanager
def _local_auth():
    """Token authentication for the local Ray, unless RAY_AUTH_MODE says otherwise.

    Ray 2.60 binds its GCS, raylet and worker servers to every interface whatever the node IP
    (and advertises the machine's address), so a local Ray without auth lets anyone who can reach
    this machine run code in it. Left to itself, a new local Ray enables token auth too, but saves
    a token to ~/.ray/auth_token; this one lives only in the environment of this process and of the
    Ray processes it starts, and both variables are put back as they were afterwards.
    """
    if "RAY_AUTH_MODE" in os.environ:
        yield
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    def refresh():  # as Ray's own _enable_token_auth: this process re-reads its config and token
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    added = {"RAY_AUTH_MODE": "token"}
    if "RAY_AUTH_TOKEN" not in os.environ:
        added["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    os.environ.update(added)
    refresh()
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
        refresh()


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None):
    """Attach to ``address``/RAY_ADDRESS, or start (and later stop) a local Ray on 127.0.0.1."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    with contextlib.ExitStack() as stack:
        if started:
            if address:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            else:
                stack.enter_context(_local_auth())
                ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus or os.cpu_count(),
                         include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            yield
        finally:
            if started:
                ray.shutdown()
