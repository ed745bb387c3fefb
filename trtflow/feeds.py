"""Feeds for run / compare / bench: concrete shapes for dynamic inputs, random or loaded values."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from trtflow.errors import ModelLoadError, UsageError
from trtflow.spec import Shape, TensorSpec, format_shape, parse_pairs, whole_sizes

INT_RANGE = (0, 4)  # random integer inputs: small non-negative values, valid as indices and ids
MEMORY_SHARE = 0.8  # refuse a feed larger than this share of the available memory


def resolve_shape(spec: TensorSpec, shapes: Mapping[str, Shape], named: Mapping[str, int] | None = None) -> Shape:
    """The concrete shape to feed: ``--shapes`` first, then the engine's opt shape, then static dims;
    a dynamic dim whose label another input's given shape fixes (``named``: label -> size) takes
    that size over the opt shape, so inputs sharing a label agree.

    Raises:
        UsageError: a dynamic dim with no shape given and no bounds to take it from, or a given size
            that is not a whole number >= 0.
    """
    if spec.name in shapes:
        given = tuple(shapes[spec.name])
        if not whole_sizes(given):
            raise UsageError(f"the shape given for input '{spec.name}' needs whole sizes >= 0, got {given}")
        return given
    named = named or {}
    if spec.bounds is not None:
        opt = tuple(spec.bounds.opt)
        if len(opt) != spec.rank:
            return opt
        return tuple(int(named[d]) if isinstance(d, str) and d in named else o for d, o in zip(spec.shape, opt))
    if not spec.is_dynamic:
        return tuple(spec.shape)
    if all(isinstance(d, int) or d in named for d in spec.shape):
        return tuple(d if isinstance(d, int) else int(named[d]) for d in spec.shape)
    example = format_shape(d if isinstance(d, int) else 1 for d in spec.shape)
    raise UsageError(
        f"input '{spec.name}' has dynamic dims {spec.describe_shape()}; give a concrete shape, "
        f"e.g. --shapes {spec.name}:{example}"
    )


def random_array(spec: TensorSpec, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Random values of the spec's dtype: normal floats, small non-negative ints, random bools,
    short strings.

    Raises:
        UsageError: an array that would not fit in the memory available (checked before allocating).
    """
    check_fits(array_bytes(shape, spec.dtype), f"a random input '{spec.name}' of shape {format_shape(shape)}")
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if spec.dtype in ("string", "object", "str"):
        return np.array([f"s{int(i)}" for i in rng.integers(0, 10, size=shape).ravel()], dtype=object).reshape(shape)
    if spec.dtype.startswith(("int", "uint")):
        return rng.integers(INT_RANGE[0], INT_RANGE[1], size=shape).astype(spec.dtype)
    dtype = spec.dtype if _numpy_float(spec.dtype) else "float32"  # bfloat16, float8: no numpy type
    if dtype in ("float32", "float64"):  # drawn in place: no float64 copy twice the size
        return rng.standard_normal(shape, dtype=dtype)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def _numpy_float(name: str) -> bool:
    try:
        return np.dtype(name).kind in "fc"
    except TypeError:
        return False


def array_bytes(shape: Shape, dtype: str) -> int:
    """Bytes an array of ``shape`` and ``dtype`` takes (Python ints: no overflow)."""
    try:
        itemsize = 8 if dtype in ("string", "object", "str") else np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 2 if dtype == "bfloat16" else 4
    return math.prod(int(d) for d in shape) * itemsize


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(nbytes: int, what: str, share: float = MEMORY_SHARE) -> None:
    """Refuse an allocation of ``nbytes`` that cannot fit, before making it.

    Raises:
        UsageError: ``nbytes`` is more than ``share`` of the available memory.
    """
    free = available_memory()
    if free is not None and nbytes > share * free:
        raise UsageError(
            f"{what} would take {_size(nbytes)} but only {_size(free)} of memory is available; "
            "use a smaller shape (e.g. a smaller batch in --shapes)"
        )


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} EiB"


def random_feed(specs: Iterable[TensorSpec], shapes: Mapping[str, Shape] | None = None, seed: int = 0) -> dict:
    """One random array per input, shapes resolved by ``resolve_shape``; a bfloat16 or float8 input
    gets a torch tensor of its dtype (numpy has none), where torch is installed.

    Raises:
        UsageError: a dynamic dim without a shape, a negative seed, or a feed too large for memory.
    """
    specs = list(specs)
    shapes = shapes or {}
    named = dim_sizes(specs, shapes)
    resolved = {s.name: resolve_shape(s, shapes, named) for s in specs}
    check_fits(sum(array_bytes(resolved[s.name], s.dtype) for s in specs), "the random inputs")
    rng = _rng(seed)
    return {s.name: _in_dtype(random_array(s, resolved[s.name], rng), s.dtype) for s in specs}


def _in_dtype(values: np.ndarray, dtype: str, exact: bool = False):
    """``values`` as a torch tensor of ``dtype`` where numpy has no such type (bfloat16, float8), so an
    engine taking that dtype gets it (it refuses float32: the cast may round). ``exact``: only when
    every value survives the cast (a float32 file saved from such values); otherwise, or without
    torch, ``values`` unchanged."""
    if not dtype.startswith(("bfloat16", "float8")) or values.dtype.kind != "f" or values.dtype.itemsize < 4:
        return values
    try:
        import torch
    except ImportError:
        return values
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype):
        return values
    from trtflow.arrays import to_torch

    cast = to_torch(values).to(target)  # to_torch: native byte order, contiguous
    if exact and not np.array_equal(cast.double().numpy(), values, equal_nan=True):
        return values
    return cast


def dim_sizes(specs: Iterable[TensorSpec], shapes: Mapping[str, Shape]) -> dict[str, int]:
    """Sizes of named dynamic dims fixed by the shapes given (``batch`` -> 8 from ``images:8x3x640x640``),
    so inputs sharing the label (``sizes: (batch, 2)``) get the same size, as ``build`` does."""
    named: dict[str, int] = {}
    for spec in specs:
        given = shapes.get(spec.name)
        if given is None or len(given) != spec.rank:
            continue
        for d, size in zip(spec.shape, given):
            if isinstance(d, str) and d not in ("?", ""):
                named.setdefault(d, int(size))
    return named


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"the seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(seed)


def parse_input_args(args: Iterable[str] | None, flag: str = "--input") -> dict[str, str]:
    """``["images=a.npy", "mask=random"]`` -> ``{"images": "a.npy", "mask": "random"}``.

    The one ``--input`` rule: ``NAME=FILE.npy``, ``NAME=FILE.npz`` (the array named NAME),
    ``NAME=FILE.npz:KEY`` (the array named KEY) or ``NAME=random``.

    Raises:
        UsageError: an item that is not NAME=VALUE, or a value that is neither a .npy/.npz file nor random.
    """
    example = f"NAME=FILE.npy, NAME=FILE.npz[:KEY] or NAME=random, e.g. {flag} images=batch.npy"
    for item in args or []:
        parts = str(item).split(":")
        at = next((i for i in range(1, len(parts)) if _looks_like_shape(parts[i])), None)
        if "=" not in str(item) and at is not None:  # the old NAME:SHAPE[:DTYPE] spelling
            name = ":".join(parts[:at])
            dtype = f" --dtypes {name}:{parts[at + 1]}" if at + 1 < len(parts) else ""
            raise UsageError(f"bad {flag} '{item}': {flag} takes values ({example}); a shape goes to "
                             f"--shapes {name}:{parts[at]}{dtype}")
    pairs = parse_pairs(args, flag, example)
    for name, value in pairs.items():
        if value != "random" and split_npz(value)[0].suffix.lower() not in (".npy", ".npz"):
            hint = f"; a shape goes to --shapes {name}:{value}" if _looks_like_shape(value) else ""
            raise UsageError(f"bad {flag} '{name}={value}': expected {example}{hint}")
    return pairs


def _looks_like_shape(text: str) -> bool:
    return bool(text) and all(p.isdigit() for p in text.lower().split("x"))


def split_npz(value: str) -> tuple[Path, str | None]:
    """``"a.npz:images"`` -> ``(Path("a.npz"), "images")``, split after the first ``.npz`` so a key
    may hold ':' (``"a.npz:input_1:0"``); any other value -> ``(Path(value), None)``."""
    value = str(value)
    at = value.lower().find(".npz:")
    if at >= 0 and value[at + 5:]:
        return Path(value[:at + 4]), value[at + 5:]
    return Path(value), None


def load_array(value: str, name: str, lazy: bool = False) -> np.ndarray:
    """The array an ``--input NAME=VALUE`` names: a ``.npy`` file, or one array of a ``.npz``
    (``KEY`` when given as ``FILE.npz:KEY``, else the array called ``name``). ``lazy``: a ``.npy``
    file is mapped, not read (for checks that need only its shape and dtype).

    Raises:
        ModelLoadError: a missing, unreadable or malformed file, or a .npz without that array.
    """
    path, key = split_npz(value)
    key = key or name
    if not path.exists():
        raise ModelLoadError(f"input file not found: {path}; check the path given to --input {name}=")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; --input {name}= takes a .npy or .npz file")
    try:
        data = np.load(path, allow_pickle=False, mmap_mode="r" if lazy else None)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return np.asarray(data)
        with data:
            if key not in data.files:
                raise ModelLoadError(
                    f"{path} holds no array '{key}' (it holds {sorted(data.files)}); give the key as "
                    f"--input {name}={path}:KEY"
                )
            return np.asarray(data[key])
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises many types on a malformed file
        reason = f"{type(exc).__name__}: {exc}"
        if "allow_pickle" in str(exc):  # numpy calls any file it does not know a pickle
            pickled = _starts_with(path, (b"\x93NUMPY", b"\x80", b"PK\x03\x04"))  # .npy, pickle, .npz (a zip)
            reason = ("it holds Python objects (pickles), which are not loaded; save numbers, or strings as "
                      "fixed-width text (arr.astype(str))" if pickled
                      else "it is not a .npy or .npz file (save arrays with numpy.save or numpy.savez)")
        raise ModelLoadError(f"cannot read {path} as .npy/.npz: {reason}") from None


def _starts_with(path: Path, prefixes: tuple[bytes, ...]) -> bool:
    """True when the file begins with one of ``prefixes``."""
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(prefixes)
    except OSError:
        return False


def build_feed(
    specs: list[TensorSpec],
    inputs: Mapping[str, str] | None = None,
    shapes: Mapping[str, Shape] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The feed for a run: files where given (see ``parse_input_args``), random elsewhere. A float32
    file for a bfloat16 or float8 input becomes a torch tensor of that dtype when no value rounds.

    Raises:
        UsageError: an --input or a shape naming no model input, or random inputs too large for memory.
        ModelLoadError: an input file that is missing or unreadable, or a .npz without the array.
    """
    inputs = dict(inputs or {})
    names = [s.name for s in specs]
    for name in inputs:
        if name not in names:
            raise UsageError(f"--input names '{name}', which is not a model input; the model's inputs are {names}")
    shapes = dict(shapes or {})
    for name in shapes:  # a misspelt name would leave its input at the engine's opt or static shape
        if name not in names:
            raise UsageError(f"--shapes names '{name}', which is not a model input; the model's inputs are {names}")
    dtypes = {s.name: s.dtype for s in specs}
    loaded = {name: load_array(value, name) for name, value in inputs.items() if value != "random"}
    for name, arr in loaded.items():
        shapes[name] = arr.shape
        loaded[name] = _in_dtype(arr, dtypes[name], exact=True)  # a bfloat16 input's saved values
    feed = random_feed([s for s in specs if s.name not in loaded], shapes, seed)
    feed.update(loaded)
    return {s.name: feed[s.name] for s in specs}


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as one .npz (any names, even ``file``), to a temporary file renamed into place.

    Object (string) arrays are stored as fixed-width unicode, so ``load_array`` reads them back
    without unpickling; torch tensors as numpy arrays, bfloat16 and float8 ones as float32 (exact:
    numpy has no such types; ``build_feed`` casts them back for an input of that dtype).
    """
    import zipfile

    from trtflow.arrays import to_numpy

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                arr = to_numpy(value)
                if arr.dtype == object:
                    arr = arr.astype(str)
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arr, order="C"), allow_pickle=False)  # a scalar stays 0-d
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
