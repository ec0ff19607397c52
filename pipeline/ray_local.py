"""Ray, started on demand for `predict --engine ray` and `sweep --engine ray`.

The cluster in ``$RAY_ADDRESS`` when set (the user's choice), else a local one whose services (GCS,
raylet, workers; no dashboard) listen on 127.0.0.1 only: they take no authentication, so nothing else
on the network may reach them. Ray is an optional extra: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.messages import UserError

# Workers find the same caches (ONNX exports), ultralytics settings folder and checkpoint policy
# ($YOLO_PIPELINE_TRUST_CHECKPOINTS). Nothing secret: Ray records the runtime environment it is sent.
_FORWARDED = ("YOLO_PIPELINE_", "YOLO_CONFIG_DIR")


class RayUnavailable(UserError):
    """Ray is not installed."""


def cluster_address() -> str:
    """The user's Ray cluster (``$RAY_ADDRESS``), or "" for a local Ray on this machine."""
    return os.environ.get("RAY_ADDRESS", "").strip()


def start_ray(object_store_mb: int = 256) -> Any:
    """The ``ray`` module, initialised (once per process): on ``$RAY_ADDRESS``'s cluster, else on loopback."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable('Ray is not installed (pip install -e ".[ray]")') from None
    if ray.is_initialized():
        return ray
    address = cluster_address() or None
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}
    options: dict[str, Any] = {
        "address": address,
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
        "runtime_env": {"env_vars": env},
    }
    if address:
        ray.init(**options)
    else:
        _init_on_loopback(ray, options | {"object_store_memory": object_store_mb * 1024 * 1024})
    return ray


def _init_on_loopback(ray: Any, options: dict[str, Any]) -> None:
    """Start a local Ray whose services listen on 127.0.0.1 only.

    Ray listens on all interfaces unless its node address is the loopback one, and it swaps an asked-for
    127.0.0.1 for the machine's address unless it runs as a single-machine cluster (its switch for
    laptops, ``ray_constants.ENABLE_RAY_CLUSTER``, read at that moment). Both are set for the start only.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(_node_ip_address="127.0.0.1", **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
