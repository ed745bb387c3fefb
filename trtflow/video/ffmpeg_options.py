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
import re
from pathlib import Path
from typing import Any, Iterable, Optional

log = logging.getLogger(__name__)

LIBRARIES = ("avutil", "avformat", "avcodec")
SEARCH = 1 | 2  # AV_OPT_SEARCH_CHILDREN | AV_OPT_SEARCH_FAKE_OBJ: a class's options and its children's


def unknown_options(names: Iterable[str]) -> list[str]:
    """The names that no FFmpeg format, device, protocol or codec has as an option, in order.

    Empty (the names not checked; logged) when there are none, when FFmpeg's libraries cannot be
    loaded, or when only the system's were found: they may not be the ones PyAV uses, whose option
    tables can differ.
    """
    names = list(names)
    if not names:
        return []
    tables = _option_tables()
    if tables is None:
        return []
    find, classes, pyav = tables
    unknown = [name for name in names
               if not any(find(ctypes.byref(cls), name.encode(), None, 0, SEARCH) for cls in classes)]
    if unknown and not pyav:
        log.warning("FFmpeg option(s) %s not found in the system's FFmpeg, which may not be the one PyAV uses; "
                    "passed on unchecked", ", ".join(unknown))
        return []
    return unknown


@functools.lru_cache(maxsize=1)
def _option_tables() -> Optional[tuple[Any, list, bool]]:
    """``av_opt_find``, the format and codec contexts' option classes, and whether the libraries
    are the ones PyAV loaded; None when they cannot be loaded."""
    paths, pyav = _library_paths()
    if len(paths) < len(LIBRARIES):
        log.info("FFmpeg's libraries were not found; FFmpeg option names are not checked")
        return None
    try:
        libs = {name: ctypes.CDLL(path) for name, path in paths.items()}
        find = libs["avutil"].av_opt_find
        find.restype = ctypes.c_void_p
        find.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        classes = []
        for lib, getter in ((libs["avformat"], "avformat_get_class"), (libs["avcodec"], "avcodec_get_class")):
            get_class = getattr(lib, getter)
            get_class.restype = ctypes.c_void_p
            classes.append(ctypes.c_void_p(get_class()))  # a "fake object": a pointer to the class
    except (OSError, AttributeError) as exc:
        log.warning("FFmpeg's libraries could not be loaded (%s); FFmpeg option names are not checked", exc)
        return None
    return find, classes, pyav


def _library_paths() -> tuple[dict[str, str], bool]:
    """Paths of FFmpeg's libraries (name -> path) and whether they are the ones PyAV loaded: those
    mapped into this process (Linux), else those PyAV's wheel ships (av.libs, av/.dylibs), else the
    system's (``find_library``; PyAV may have been built against another FFmpeg)."""
    import av

    found = _pyav_libraries()
    if len(found) == len(LIBRARIES):
        return found, True
    package = Path(av.__file__).resolve().parent
    for folder in (package.parent / "av.libs", package / ".dylibs"):
        shipped = {name: sorted(folder.glob(f"lib{name}[-.]*")) for name in LIBRARIES} if folder.is_dir() else {}
        if shipped and all(shipped.values()):
            return {name: str(paths[0]) for name, paths in shipped.items()}, True
    system = {name: ctypes.util.find_library(name) for name in LIBRARIES}
    return {name: path for name, path in system.items() if path}, False


def _pyav_libraries() -> dict[str, str]:
    """Paths of FFmpeg's libraries mapped into this process (after importing av), from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return {}
    found = {}
    for path in sorted({f[5].strip() for f in fields if len(f) == 6}):
        match = re.match(r"lib(avutil|avformat|avcodec)[-.]", Path(path).name)
        if match and ".so" in path:
            found.setdefault(match.group(1), path)
    return found
