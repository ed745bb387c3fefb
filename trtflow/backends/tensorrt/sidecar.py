"""The JSON sidecar written beside every plan (``model.plan.json``): what built it, for which GPU,
its I/O and profiles. It answers "can this plan run here?" without deserializing the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from trtflow.backends.tensorrt.flavor import Flavor, describe_target
from trtflow.cache_dir import left_by_dead_writer, writer_tag
from trtflow.spec import Profile, TensorSpec

SIDECAR_SUFFIX = ".json"

log = logging.getLogger(__name__)


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    return Path(str(plan_path) + SIDECAR_SUFFIX)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{writer_tag()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` (``.NAME.HOST-PID.NS.tmp``) left by writers of this host
    that were killed (their process is gone); a live writer's file, another host's and one without a
    host are kept. Returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if left_by_dead_writer(tmp.name[len(path.name) + 2:].split(".")[0]):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by killed writers of %s", len(removed), path)
    return removed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sidecar(result: Any, **extra: Any) -> dict:
    """Sidecar data for a ``BuildResult`` (plus ``extra`` fields such as the cache key)."""
    from trtflow import __version__

    data = result.to_dict()
    data.update(
        trtflow_version=__version__,
        plan_sha256=sha256(result.plan),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    data.update(extra)
    return data


def write_plan(plan_path: str | os.PathLike, result: Any, **extra: Any) -> dict:
    """Write the plan, then its sidecar (a sidecar present means a complete plan), atomically."""
    plan_path = Path(plan_path)
    meta = make_sidecar(result, **extra)
    atomic_write(plan_path, result.plan)
    atomic_write(sidecar_path(plan_path), json.dumps(meta, indent=2).encode())
    return meta


def read_sidecar(plan_path: str | os.PathLike) -> dict | None:
    """The sidecar of a plan, or None when it is missing, unreadable or malformed (a malformed one
    is logged and ignored, so the plan is rebuilt instead of breaking every later build)."""
    path = sidecar_path(plan_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the sidecar %s: it cannot be read (%s)", path, exc)
        return None
    why = malformed(data)
    if why:
        log.warning("ignoring the sidecar %s: %s", path, why)
        return None
    return data


# field -> the JSON types it may hold (None: may be absent or null)
FIELDS = {
    "flavor": (str,), "version": (str,), "plan_sha256": (str,), "engine_bytes": (int,),
    "target": (dict, type(None)), "config": (dict, type(None)), "precision": (dict, type(None)),
    "build_seconds": (int, float, type(None)), "inputs": (list,), "outputs": (list,), "profiles": (list,),
    "source": (str, type(None)), "created": (str, type(None)), "key": (str, type(None)),
}


def malformed(data: Any) -> str | None:
    """Why ``data`` is not a usable sidecar, or None when it is."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    for name, types in FIELDS.items():
        if name in data and (not isinstance(data[name], types) or isinstance(data[name], bool)):
            return f"field '{name}' is {data[name]!r}, expected {' or '.join(t.__name__ for t in types)}"
    for name in ("flavor", "version", "plan_sha256", "engine_bytes"):
        if name not in data:
            return f"field '{name}' is missing"
    try:
        io_from_sidecar(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return f"its inputs, outputs or profiles are malformed ({type(exc).__name__}: {exc})"
    return None


def io_from_sidecar(meta: dict) -> tuple[list[TensorSpec], list[TensorSpec], list[Profile]]:
    """Input specs, output specs and profiles recorded in a sidecar."""
    return (
        [TensorSpec.from_dict(s) for s in meta.get("inputs", [])],
        [TensorSpec.from_dict(s) for s in meta.get("outputs", [])],
        [Profile.from_dict(p) for p in meta.get("profiles", [])],
    )


def incompatibility(meta: dict, flavor: Flavor, target: dict) -> str | None:
    """Why a plan described by ``meta`` cannot run with ``flavor`` on ``target``, or None.

    A different flavor or version is always incompatible (plans are not portable across
    TensorRT versions unless built version-compatible). A different GPU is incompatible unless
    the plan was built hardware-compatible, or built without a GPU (TensorRT-RTX ahead of time).
    """
    built = f"{'TensorRT-RTX' if meta.get('flavor') == 'tensorrt_rtx' else 'TensorRT'} {meta.get('version')}"
    version_compatible = (meta.get("config") or {}).get("version_compatible", False)
    if meta.get("flavor") != flavor.name or (meta.get("version") != flavor.version and not version_compatible):
        return f"the plan was built by {built}; this machine has {flavor.label}"
    had = meta.get("target") or {}
    hw_level = (meta.get("config") or {}).get("hardware_compatibility_level")
    if had.get("compute_capability") and hw_level in (None, "none"):
        if had.get("compute_capability") != target.get("compute_capability") or had.get("name") != target.get("name"):
            return f"the plan was built for {describe_target(had)}; this machine has {describe_target(target)}"
    return None
