"""Safe readers for published data formats (NAS-Bench-360, CIFAR): pickles (plain or gzip), ``.npy`` (also ``.npy``
files that hold a pickled object), ``.npz`` and MATLAB ``.mat``.

Pickles can run arbitrary code when loaded, so they only go through :class:`ArrayUnpickler`, which rebuilds numpy
arrays, dtypes, scalars and builtin containers and refuses every other global.
"""

from __future__ import annotations

import gzip
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric


def _latin1_encode(text: str, encoding: str) -> bytes:
    """What protocol-2 pickles written by Python 3 call (as ``_codecs.encode``) to rebuild ``bytes``."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    **{(f"{core}.multiarray", "_reconstruct"): multiarray._reconstruct for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.multiarray", "scalar"): multiarray.scalar for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.numeric", "_frombuffer"): numeric._frombuffer for core in ("numpy.core", "numpy._core")},
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only; any other global raises ``pickle.UnpicklingError``.

    ``encoding="latin1"`` reads numpy arrays pickled by Python 2 too (numpy's own advice).
    """

    def __init__(self, file, source: Path | str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to unpickle {module}.{name}: this file can run code; published data "
                "files only hold numpy arrays and builtin containers"
            )
        return _ARRAY_GLOBALS[module, name]


def read_pickle(path: Path) -> object:
    """A pickle, gzip-compressed when the name ends in ``.gz``."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        return ArrayUnpickler(f, path).load()


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array; object arrays (``np.save`` of a dict or tuple) are unpickled with :class:`ArrayUnpickler`."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy file ({e})") from None
        if version not in headers:
            raise ValueError(f"{path}: .npy format version {version} is not supported (1.0 and 2.0 are)")
        _, _, dtype = headers[version](f)
        if dtype.hasobject:
            return ArrayUnpickler(f, path).load()
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)


def read_npy_dict(path: Path, keys: tuple[str, ...]) -> dict:
    """A ``.npy`` file holding a pickled dict (``np.save(path, {...})``) that has at least ``keys``."""
    content = read_npy(path)
    content = content.item() if isinstance(content, np.ndarray) and content.shape == () else content
    return require_keys(content, keys, path)


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` archive (object arrays are refused, as ``allow_pickle=False`` does)."""
    with np.load(path, allow_pickle=False) as archive:
        require_keys(archive, keys, path)
        return {key: archive[key] for key in keys}


def read_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a MATLAB file: scipy for v4–v7.2, h5py for v7.3 (HDF5, whose arrays MATLAB stores
    with the axes reversed; they are transposed back, as the FNO ``MatReader`` does)."""
    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is not None and h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            require_keys(f, keys, path)
            return {key: np.asarray(f[key][()]).T for key in keys}
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError(f"{path}: reading MATLAB files needs scipy (v4–v7.2 files) or h5py (v7.3 files); "
                          "install `scipy` and `h5py`") from None
    try:
        content = loadmat(path, variable_names=keys)
    except NotImplementedError:  # scipy's answer to v7.3 files
        raise ImportError(f"{path} is a MATLAB v7.3 (HDF5) file: reading it needs h5py (`pip install h5py`)") from None
    return {key: content[key] for key in require_keys(content, keys, path)}


def require_keys(mapping, keys: tuple[str, ...], path: Path):
    """``mapping`` itself if it is a mapping with all ``keys``, else a ``ValueError`` naming ``path``."""
    if not hasattr(mapping, "keys") or any(key not in mapping for key in keys):
        found = sorted(mapping.keys()) if hasattr(mapping, "keys") else type(mapping).__name__
        raise ValueError(f"{path}: expected the keys {list(keys)}, found {found}")
    return mapping


def require_shape(array: np.ndarray, shape: tuple, path: Path, what: str) -> np.ndarray:
    """``array`` if its shape matches ``shape`` (``None`` matches any size), else a ``ValueError``."""
    array = np.asarray(array)
    if array.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, array.shape)):
        pattern = "×".join("N" if s is None else str(s) for s in shape)
        raise ValueError(f"{path}: {what} should have shape {pattern}, found {array.shape}")
    return array


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file that a process appends to; a last line cut short by a kill is skipped."""
    import json

    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
