"""The engine cache: plans keyed by ONNX bytes, build config, TensorRT flavor/version and target GPU.

Layout under ``cache_dir()/engines``: ``KEY.plan``, its sidecar ``KEY.plan.json`` and a lock file
``KEY.lock``, never deleted (``EngineCache.clear`` says why). A build holds the lock (filelock), so
two processes asking for one key build it once; plan and sidecar are written atomically (temporary
file + ``os.replace``), the sidecar last.
An entry is used only when its sidecar says it was built by this TensorRT for this GPU and the
plan's SHA-256 matches; otherwise it is rebuilt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tuned import material_key, model_digest
from trtflow.progress import Progress
from trtflow.backends.tensorrt.flavor import Flavor, load_flavor, target_of
from trtflow.backends.tensorrt.sidecar import (incompatibility, read_sidecar, remove_stale_temps, sha256, sidecar_path,
                                               write_plan)
from trtflow.graph.io import ModelLike

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 3600  # a build may take long on a small GPU; waiting longer means a stuck process


@dataclass
class CacheEntry:
    """A cached plan.

    Attributes:
        key: the cache key.
        plan_path: the plan file.
        meta: its sidecar.
        hit: True when it was reused, False when built by this call.
        rebuilt_because: why an existing entry was rebuilt, if it was.
    """

    key: str
    plan_path: Path
    meta: dict
    hit: bool
    rebuilt_because: str | None = None
    data: bytes | None = field(default=None, repr=False)  # the plan as checked or built

    def plan(self) -> bytes:
        """The plan's bytes: those the cache checked against the sidecar or just built, so a
        ``trtflow cache clear`` in another process since then does not take them away."""
        return self.data if self.data is not None else self.plan_path.read_bytes()


def cache_key(digest: str, config: BuildConfig, flavor: Flavor, target: dict) -> str:
    """SHA-256 over the ONNX model's digest (``model_digest``), the config's key fields, the TensorRT
    flavor/version and the GPU."""
    material = {
        "onnx_sha256": digest,
        "config": config.key_dict(),
        "flavor": flavor.name,
        "version": flavor.version,
        "gpu": {"name": target.get("name"), "compute_capability": target.get("compute_capability")},
    }
    return material_key(material)


class EngineCache:
    """Build-or-reuse of TensorRT plans.

    Args:
        root: the folder of plans; default ``trtflow.cache_dir.cache_dir() / "engines"``.
    """

    def __init__(self, root: str | Path | None = None):
        if root is None:
            from trtflow.cache_dir import cache_dir

            root = cache_dir() / "engines"
        self.root = Path(root)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """Plan, sidecar and lock paths of a key."""
        plan = self.root / f"{key}.plan"
        return plan, sidecar_path(plan), self.root / f"{key}.lock"

    def check(self, key: str, flavor: Flavor, target: dict) -> tuple[dict | None, str | None]:
        """``(sidecar, None)`` for a usable entry, ``(None, why)`` for a stale one, ``(None, None)`` if absent."""
        meta, _, why = self._read(key, flavor, target)
        return meta, why

    def _read(self, key: str, flavor: Flavor, target: dict) -> tuple[dict | None, bytes | None, str | None]:
        """``check`` with the plan's bytes of a usable entry: ``(sidecar, plan, None)``."""
        plan, side, _ = self.paths(key)
        if not side.exists() and not plan.exists():
            return None, None, None
        meta = read_sidecar(plan)
        if meta is None:
            return None, None, "its sidecar is missing or unreadable"
        why = incompatibility(meta, flavor, target)
        if why:
            return None, None, why
        try:
            data = plan.read_bytes()
        except OSError:
            return None, None, "its plan file is missing"
        if len(data) != meta.get("engine_bytes") or sha256(data) != meta.get("plan_sha256"):
            return None, None, "its plan does not match the sidecar's size or SHA-256"
        return meta, data, None

    def get_or_build(
        self,
        onnx: ModelLike,
        config: BuildConfig | None = None,
        *,
        progress: Progress | None = None,
        flavor: Flavor | None = None,
        force: bool = False,
        device: int = 0,
    ) -> CacheEntry:
        """The cached plan for ``onnx`` built with ``config``, building it when absent or stale.

        Args:
            onnx: path, bytes or onnx.ModelProto.
            config: build options.
            progress: build progress callback (``trtflow.progress.Progress``).
            flavor: the TensorRT to build with (default ``load_flavor()``).
            force: rebuild even when a valid entry exists (e.g. the runtime refused the plan).
            device: the CUDA device the plan is for; its GPU goes into the key and the sidecar.

        Raises:
            BuildError, UsageError, ModelLoadError: as ``build_engine``.
        """
        from filelock import FileLock

        from trtflow.backends.tensorrt.builder import build_engine

        config = config or BuildConfig()
        flavor = flavor or load_flavor()
        target = target_of(device)
        digest = model_digest(onnx)  # a file read once per process: tune's key reads it too
        key = cache_key(digest, config, flavor, target)
        plan, _, lock = self.paths(key)
        if not force:
            meta, data, _ = self._read(key, flavor, target)
            if meta is not None:
                log.info("engine cache hit %s", key)
                return CacheEntry(key, plan, meta, hit=True, data=data)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock), timeout=LOCK_TIMEOUT_S):
            meta, data, why = self._read(key, flavor, target)
            if meta is not None and not force:  # another process built it while we waited
                return CacheEntry(key, plan, meta, hit=True, data=data)
            if force:
                why = why or "a rebuild was asked for"
            if why:
                log.warning("rebuilding cached engine %s: %s", key, why)
            result = build_engine(onnx, config, progress=progress, flavor=flavor, device=device)
            source = str(onnx) if isinstance(onnx, (str, Path)) else None
            meta = write_plan(
                plan, result, key=key, onnx_sha256=digest, source=source, config=config.key_dict()
            )
        return CacheEntry(key, plan, meta, hit=False, rebuilt_because=why, data=result.plan)

    def entries(self) -> list[dict]:
        """One dict per cached plan: key, path, size, and the sidecar's main fields."""
        out = []
        if not self.root.exists():
            return out
        for plan in sorted(self.root.glob("*.plan")):
            try:
                size = plan.stat().st_size
            except FileNotFoundError:  # removed since the folder was read (cache clear in another process)
                continue
            meta = read_sidecar(plan) or {}
            out.append(
                {
                    "key": plan.stem,
                    "path": str(plan),
                    "engine_bytes": size,
                    "source": meta.get("source"),
                    "flavor": meta.get("flavor"),
                    "version": meta.get("version"),
                    "target": meta.get("target"),
                    "precision": (meta.get("precision") or {}).get("path"),
                    "build_seconds": meta.get("build_seconds"),
                    "created": meta.get("created"),
                    "complete": bool(meta),
                }
            )
        return out

    def clear(self) -> int:
        """Delete every cached plan and sidecar, and the temporary files of killed writers; return how
        many plans were removed.

        A key whose lock another process holds (a build under way) is left alone, with its writer's
        temporary files: deleting them would break that build's rename. The empty lock files stay: a
        build that opened one before it was deleted could lock that file while a third process creates
        and locks a new one of the same name, and both would build the key at once.
        """
        from filelock import FileLock, Timeout

        if not self.root.exists():
            return 0
        keys = {p.name.split(".")[0] for p in self.root.iterdir()
                if p.suffix in (".plan", ".json", ".lock") and not p.name.startswith(".")}
        removed = 0
        for key in sorted(keys):
            plan, side, lock = self.paths(key)
            try:
                with FileLock(str(lock), timeout=0):
                    removed += plan.exists()
                    plan.unlink(missing_ok=True)
                    side.unlink(missing_ok=True)
            except Timeout:
                log.info("engine cache: %s is being built by another process; left alone", key)
        # .KEY.plan[.json].HOST-PID.NS.tmp: only this host's dead writers' go, each written file's looked up once
        for target in {tmp.name[1:].removesuffix(".tmp").rsplit(".", 2)[0] for tmp in self.root.glob(".*.tmp")}:
            remove_stale_temps(self.root / target)
        return removed
