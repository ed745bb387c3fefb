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


def writer_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host (the writer named in a temporary file's or folder's name,
    after ``HOST``) still runs: what a killed writer left may be removed only once it is gone."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
