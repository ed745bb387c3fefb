"""Where trtflow keeps built artifacts (exported ONNX files, TensorRT engines, timing caches)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from trtflow.errors import UsageError

ENV_VAR = "TRTFLOW_CACHE_DIR"
# this host, in the names of temporary files and folders (beside the writer's PID): a folder on NFS or on a
# volume that several containers mount has writers elsewhere, whose PIDs mean nothing here, so only this
# host's leftovers are ever removed. Letters, digits and "_" only: "." and "-" separate the name's parts.
HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "localhost"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The user cache folder, or a subfolder of it.

    ``$TRTFLOW_CACHE_DIR`` wins when set; otherwise the platform's user cache folder
    (``~/.cache/trtflow`` on Linux, from ``platformdirs``).

    Args:
        *parts: subfolder names under the cache root, e.g. ``cache_dir("quickstart")``.
        create: make the folder if it does not exist.

    Returns:
        The folder's path.

    Raises:
        UsageError: the folder cannot be made (``$TRTFLOW_CACHE_DIR`` names a file, no permission, ...).
    """
    root = os.environ.get(ENV_VAR)
    if root:
        base = Path(root).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("trtflow", appauthor=False))
    path = base.joinpath(*parts)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = f"${ENV_VAR}={root}" if root else f"the user cache folder {base}"
            what = "a file, not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
            raise UsageError(
                f"cannot use {path} as trtflow's cache folder ({where}): {what}. Point ${ENV_VAR} at a "
                "writable folder"
            ) from None
    return path


def writer_tag() -> str:
    """This process's mark in the names of the temporary files and folders it writes: ``HOST-PID``."""
    return f"{HOST}-{os.getpid()}"


def left_by_dead_writer(tag: str) -> bool:
    """Whether ``tag`` (a ``writer_tag``) names a writer of this host that no longer runs: what it left
    may be removed. Another host's tag, or a name without a host, is never one."""
    host, _, pid = tag.rpartition("-")
    if host != HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False
