"""Which option names FFmpeg knows, from FFmpeg's own option tables.

FFmpeg leaves an option it does not know unused, without a word: ``avformat_open_input`` hands the
unused ones back to its caller, and PyAV drops them; PyAV has no list of a format's or a protocol's
options either (only a codec context's ``supported_options``). So ``unknown_options`` asks
FFmpeg's ``av_opt_find`` in the libraries PyAV loaded, over the format context's options and its
children's (every demuxer, muxer, device and protocol) and the codec context's and its children's
(every decoder and encoder), as ffmpeg's command line does before it says "Unrecognized option".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from pathlib import Path
from typing import Any, Iterable, Optional

log = logging.getLogger(__name__)

SEARCH = 1 | 2  # AV_OPT_SEARCH_CHILDREN | AV_OPT_SEARCH_FAKE_OBJ: a class's options and its children's


def unknown_options(names: Iterable[str]) -> list[str]:
    """The names that no FFmpeg format, device, protocol or codec has as an option, in order.

    Empty when FFmpeg's libraries are not found (the names are then not checked; logged).
    """
    tables = _option_tables()
    if tables is None:
        return []
    find, classes = tables
    return [name for name in names
            if not any(find(ctypes.byref(cls), name.encode(), None, 0, SEARCH) for cls in classes)]


@functools.lru_cache(maxsize=1)
def _option_tables() -> Optional[tuple[Any, list]]:
    """``av_opt_find`` and the format and codec contexts' option classes, or None."""
    libs = {name: _library(name) for name in ("avutil", "avformat", "avcodec")}
    if None in libs.values():
        log.info("FFmpeg's libraries were not found next to PyAV; FFmpeg option names are not checked")
        return None
    find = libs["avutil"].av_opt_find
    find.restype = ctypes.c_void_p
    find.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    classes = []
    for lib, getter in ((libs["avformat"], "avformat_get_class"), (libs["avcodec"], "avcodec_get_class")):
        get_class = getattr(lib, getter)
        get_class.restype = ctypes.c_void_p
        classes.append(ctypes.c_void_p(get_class()))  # a "fake object": a pointer to the class
    return find, classes


def _library(name: str) -> Optional[ctypes.CDLL]:
    """FFmpeg's library ``name`` as PyAV's wheel ships it (av.libs, av/.dylibs), else the system's."""
    import av

    package = Path(av.__file__).resolve().parent
    for folder in (package.parent / "av.libs", package / ".dylibs"):
        found = sorted(folder.glob(f"*{name}*")) if folder.is_dir() else []
        if found:
            return ctypes.CDLL(str(found[0]))
    path = ctypes.util.find_library(name)  # PyAV built against the system's FFmpeg
    return ctypes.CDLL(path) if path else None
