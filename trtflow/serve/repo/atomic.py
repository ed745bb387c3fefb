"""Writes into a Triton model repository that a polling Triton sees whole or not at all (``AtomicWrite``)."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from trtflow.cache_dir import left_by_dead_writer, writer_tag
from trtflow.errors import UsageError
from trtflow.serve.repo.config import validate_pbtxt

log = logging.getLogger(__name__)



class AtomicWrite:
    """The models and versions one write adds or replaces, built where a polling Triton does not look and
    moved into place by ``commit``, each with one rename. Triton takes every folder in the repository root
    for a model (hidden ones too), but in a model folder only config.pbtxt and the names that read as a
    number (its versions).

    Writing version V of model N replaces N/V and N/config.pbtxt only: N's other versions stay, and
    ``write_config`` refuses a config.pbtxt that no longer describes them. Version V is built in
    N/.V.writing-PID and config.pbtxt in N/.config.pbtxt.PID; ``commit`` moves an existing N/V aside to
    N/.V.replaced-PID, renames the new one to N/V, then config.pbtxt, and deletes the old version once every
    model is in place. A new model N is built whole in a folder beside the repository
    (REPO/../.REPO.writing-PID-<random suffix>, on the same filesystem) and renamed to REPO/N; where there is no such
    folder (REPO's parent not writable, REPO a mount point) N is made in place, empty until its version and
    config.pbtxt arrive as above, with a warning. A write that fails, is refused or is stopped half-way,
    ``commit`` included, removes what it built and leaves the repository as it was (``rollback``). What a
    write killed outright (SIGKILL) left is removed by the next write on the same host to the model or the
    repository, once the process named by its PID is gone; a version it had moved aside and not replaced is
    put back. PID in these names stands for HOST-PID (``HOST``, this host's name): on a repository that
    several hosts or containers share, another host's names, and names without a host, are left alone.

    Used as a context manager: ``commit`` when the block ends, ``rollback`` when it raises."""

    def __init__(self) -> None:
        self.renames: list[tuple[Path, Path]] = []  # (built, where it goes), in the order commit moves them
        self.built: dict[Path, Path] = {}  # model folder -> where this write builds it (itself when in place)
        self.kept: dict[Path, list[int]] = {}  # existing model folder -> the versions the write leaves as they are
        self.configs: dict[Path, str] = {}  # config.pbtxt files replaced, with their old text
        self.created: list[Path] = []  # new model folders made in place
        self.outside: Path | None = None  # the folder beside the repository new models are built in
        self.in_place = False  # no such folder: new models are made in place
        self.done: list[Path] = []  # what commit has moved into place
        self.moved: list[tuple[Path, Path]] = []  # versions commit moved aside, and where
        self.swept: set[Path] = set()  # repositories whose neighbours killed writes left were removed

    def __enter__(self) -> "AtomicWrite":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.rollback()

    def prepare(self, model_dir: Path, version: int, overwrite: bool) -> Path:
        """Make room for version ``version`` of ``model_dir``: refuse an existing model unless ``overwrite``,
        and make the folder the version is written into until ``commit`` moves it into place."""
        if model_dir.parent not in self.swept and model_dir.parent.is_dir():
            self.swept.add(model_dir.parent)
            _sweep_beside(model_dir.parent.resolve())
        if model_dir.exists():
            _sweep_model(model_dir)
            if not overwrite:
                raise UsageError(f"{model_dir} exists; pick another --name or pass --overwrite to replace its "
                                 f"version {version} (other versions stay)")
            self.kept[model_dir] = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir()
                                          and p.name != str(version) and p.name.isascii() and p.name.isdigit()
                                          and p.name[0] != "0")
        elif self._outside(model_dir.parent) is not None:
            built = self.outside / model_dir.name
            (built / str(version)).mkdir(parents=True)
            self.built[model_dir] = built
            self.renames.append((built, model_dir))
            return built / str(version)
        else:
            model_dir.mkdir()
            self.created.append(model_dir)
        self.built[model_dir] = model_dir
        staged = model_dir / f".{version}.writing-{writer_tag()}"
        shutil.rmtree(staged, ignore_errors=True)  # left by a process of the same id that was killed
        staged.mkdir()
        self.renames.append((staged, model_dir / str(version)))
        return staged

    def _outside(self, repo: Path) -> Path | None:
        """The folder beside ``repo`` new models are built in (made on first use), or None where there is none."""
        if self.outside is None and not self.in_place:
            repo.mkdir(parents=True, exist_ok=True)
            root = repo.resolve()
            try:
                if root.parent == root or root.parent.stat().st_dev != root.stat().st_dev:
                    raise OSError(f"{root} is a mount point: a folder beside it is on another filesystem")
                prefix = f".{root.name}.writing-{writer_tag()}-"
                self.outside = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
            except OSError as exc:
                self.in_place = True
                log.warning("cannot build new models beside the repository (%s): writing them in %s in place, where "
                            "a Triton polling it may try to load one before its config.pbtxt and version are "
                            "there; make %s writable, or run Triton with --model-control-mode explicit",
                            exc, root, root.parent)
        return self.outside

    def write_config(self, model_dir: Path, text: str) -> None:
        """Write ``model_dir``/config.pbtxt, which every version of the model shares (in place on ``commit``).

        Raises:
            UsageError: versions kept beside the one written, and a config that changes what describes
                their files (backend, tensors, max_batch_size, the model file trtflow loads).
        """
        built = self.built[model_dir]
        path = model_dir / "config.pbtxt"
        if built != model_dir:  # a new model, built beside the repository
            (built / "config.pbtxt").write_text(text)
            return
        if path.is_file():
            old = path.read_text()
            kept = self.kept.get(model_dir)
            changed = _changed_for_versions(old, text) if kept else []
            if changed:
                raise UsageError(
                    f"versions {kept} of '{model_dir.name}' stay beside the version written, and config.pbtxt, "
                    f"which every version shares, would change its {', '.join(changed)}, so Triton would load "
                    "them with a config written for another model; delete those version folders first, or write "
                    "this model under another --name")
            self.configs[path] = old
        temp = model_dir / f".config.pbtxt.{writer_tag()}"
        temp.write_text(text)
        self.renames.append((temp, path))  # a polling Triton reads the old text or the new, never half of it

    def commit(self) -> None:
        """Move every version, config.pbtxt and new model into place, in the order they were written."""
        try:
            for built, final in self.renames:
                if final.parent in self.kept and final.name != "config.pbtxt" and final.is_dir():
                    # the version replaced waits aside until every model is in place
                    backup = final.with_name(f".{final.name}.replaced-{writer_tag()}")
                    shutil.rmtree(backup, ignore_errors=True)
                    self.moved.append((final, final.rename(backup)))
                os.replace(built, final)
                self.done.append(final)
        except BaseException:
            self.rollback()
            raise
        for _, backup in self.moved:
            shutil.rmtree(backup, ignore_errors=True)
        if self.outside is not None:
            shutil.rmtree(self.outside, ignore_errors=True)
        self.__init__()

    def rollback(self) -> None:
        """Remove what this write built, and undo what ``commit`` had moved into place."""
        for final in reversed(self.done):
            if final in self.configs:
                temp = final.with_name(f".config.pbtxt.{writer_tag()}")
                temp.write_text(self.configs[final])
                temp.replace(final)
            elif final.is_dir():
                shutil.rmtree(final, ignore_errors=True)
            else:
                final.unlink(missing_ok=True)
        for folder, backup in reversed(self.moved):
            backup.rename(folder)
        for built, _ in self.renames:
            if built.is_dir():
                shutil.rmtree(built, ignore_errors=True)
            else:
                built.unlink(missing_ok=True)
        for folder in reversed(self.created):
            shutil.rmtree(folder, ignore_errors=True)
        if self.outside is not None:
            shutil.rmtree(self.outside, ignore_errors=True)
        self.__init__()


# what a write stages in a model folder, with its writer's tag
_STAGED = re.compile(r"\.(\d+)\.(writing|replaced)-(\w+-\d+)|\.config\.pbtxt\.(\w+-\d+)")


def _sweep_model(model_dir: Path) -> None:
    """Remove what writes of this host killed before they finished left in ``model_dir`` (their process is
    gone): versions and config.pbtxt files not moved into place, and versions moved aside; one whose place is
    still empty (the write was killed before its new version was moved in) is put back instead."""
    for path in model_dir.iterdir():
        found = _STAGED.fullmatch(path.name)
        if found is None or not left_by_dead_writer(found[3] or found[4]):
            continue
        log.info("removing %s, left by a write that was killed", path)
        if found[2] == "replaced" and not (model_dir / found[1]).exists():
            path.rename(model_dir / found[1])
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _sweep_beside(root: Path) -> None:
    """Remove the folders beside repository ``root`` that writes of this host killed before they finished
    built new models in."""
    prefix = f".{root.name}.writing-"
    for path in root.parent.glob(glob.escape(prefix) + "*"):
        if left_by_dead_writer(path.name[len(prefix):].rpartition("-")[0]):  # TAG-RANDOM (mkdtemp's suffix)
            log.info("removing %s, left by a write that was killed", path)
            shutil.rmtree(path, ignore_errors=True)


def _changed_for_versions(old: str, new: str) -> list[str]:
    """The fields of config.pbtxt that describe a version's files and differ between ``old`` and ``new``
    (an old text that does not parse describes nothing to keep)."""
    try:
        before = validate_pbtxt(old)
    except UsageError:
        return []
    after = validate_pbtxt(new)
    changed = [f for f in ("backend", "platform", "max_batch_size", "input", "output", "default_model_filename")
               if getattr(before, f) != getattr(after, f)]
    return changed + [f"parameter {k}" for k in ("trtflow_model", "trtflow_engine", "trtflow_task")
                      if before.parameters.get(k) != after.parameters.get(k)]
