"""A labeled set in its own form (a DataFrame, or an array of strings), saved without pickle.

With a Pipeline as the estimator, the learner keeps the labeled samples as the user gave
them (see :mod:`skal._samples`). A save stores such a set column by column, each column one
``.npy`` member read with ``allow_pickle=False`` under the same size checks as every array of
the save: ``X_labeled.<i>.npy`` holds column ``i``'s values (numbers, booleans, datetimes,
strings, or a categorical's codes) and ``X_labeled.<i>.missing.npy`` where its values are
missing; ``learner.json`` describes the columns (names, dtypes, categories) under
``fitted.frame``. ``X_labeled.npy`` then holds zeros of the set's shape (every check of a save
on the labeled set's shape keeps working).
"""

import re

import numpy as np

__all__ = ["is_kept", "encode", "decode", "MEMBER"]

MEMBER = re.compile(r"^X_labeled\.[0-9]{1,6}(\.missing)?\.npy$")
_NULLABLE = {"Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64", "UInt8": "uint8",
             "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64", "Float32": "float32",
             "Float64": "float64", "boolean": "bool"}


def is_kept(X):
    """Whether the labeled set ``X`` is kept in its own form (not a float32 array)."""
    return hasattr(X, "iloc") and hasattr(X, "columns") or (isinstance(X, np.ndarray) and X.dtype.kind not in "biuf")


def _strings(values, where):
    """Plain str values (missing ones as "") and the missing mask; a TypeError for anything else."""
    items = values.tolist()
    missing = np.array([item is None or (isinstance(item, float) and item != item) or type(item).__name__ == "NAType"
                        for item in items], dtype=bool)
    if not all(isinstance(item, str) for item, gone in zip(items, missing) if not gone):
        kinds = sorted({type(item).__name__ for item, gone in zip(items, missing) if not gone})
        raise TypeError(f"cannot save {where}: values of type {', '.join(kinds)}; only str, numbers, "
                        "booleans and datetimes can be saved without pickle.")
    plain = np.array(["" if gone else item for item, gone in zip(items, missing)], dtype=str)
    if plain.tolist() != ["" if gone else item for item, gone in zip(items, missing)]:
        raise TypeError(f"cannot save {where}: a string ends with a NUL character.")
    return plain, missing


def encode(X):
    """``(description, members)``: the JSON description of ``X`` and its column arrays by member name."""
    import pandas as pd

    frame = X if hasattr(X, "iloc") else pd.DataFrame(X.reshape(len(X), -1))
    description = {"array": None if hasattr(X, "iloc") else [str(X.dtype), list(X.shape[1:])],
                   "columns": [], "n_rows": len(frame)}
    members = {}
    for i, name in enumerate(frame.columns):
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise TypeError(f"cannot save X_labeled_: column name {name!r} is not a str or an int.")
        where = f"X_labeled_ column {name!r}"
        series, dtype = frame.iloc[:, i], frame.dtypes.iloc[i]
        column = {"name": name if isinstance(name, str) else int(name), "dtype": str(dtype)}
        missing = None
        if isinstance(dtype, pd.CategoricalDtype):
            categories = dtype.categories
            if categories.dtype.kind in "biuf":
                column["categories"] = categories.to_numpy().tolist()
            else:
                column["categories"] = _strings(categories.to_numpy(dtype=object), where)[0].tolist()
            column["kind"], column["ordered"] = "category", bool(dtype.ordered)
            values = series.cat.codes.to_numpy().astype(np.int32)
        elif isinstance(dtype, np.dtype) and dtype.kind in "biufmM":
            column["kind"], values = "numpy", series.to_numpy()
        elif str(dtype) in _NULLABLE:
            column["kind"] = "nullable"
            missing = series.isna().to_numpy()
            values = series.to_numpy(dtype=_NULLABLE[str(dtype)], na_value=0)
        elif dtype == object or str(dtype).startswith("string") or str(dtype) == "str":
            column["kind"] = "string"
            values, missing = _strings(series.to_numpy(dtype=object), where)
        else:
            raise TypeError(f"cannot save {where}: dtype {dtype} cannot be saved without pickle; convert "
                            "the column to numbers, str or a categorical.")
        members[f"X_labeled.{i}.npy"] = np.ascontiguousarray(values)
        if missing is not None:
            members[f"X_labeled.{i}.missing.npy"] = np.ascontiguousarray(missing, dtype=bool)
        column["missing"] = missing is not None
        description["columns"].append(column)
    return description, members


def decode(description, read):
    """The labeled set that ``description`` and the members (``read(name)`` -> array) describe.

    Raises
    ------
    ValueError
        Naming what does not fit (a member's length, a dtype, a category code).
    """
    import pandas as pd

    if not isinstance(description, dict) or set(description) != {"array", "columns", "n_rows"}:
        raise ValueError("fitted.frame: must be {array, columns, n_rows}")
    n, columns = description["n_rows"], description["columns"]
    if not isinstance(n, int) or n < 1 or not isinstance(columns, list) or not columns:
        raise ValueError("fitted.frame: n_rows must be a positive integer and columns a non-empty list")
    data = {}
    for i, column in enumerate(columns):
        if not isinstance(column, dict) or column.get("kind") not in ("category", "numpy", "nullable", "string"):
            raise ValueError(f"fitted.frame.columns[{i}]: not a column description")
        values = read(f"X_labeled.{i}.npy")
        missing = read(f"X_labeled.{i}.missing.npy") if column.get("missing") is True else None
        if values.shape != (n,) or (missing is not None and (missing.shape != (n,) or missing.dtype != bool)):
            raise ValueError(f"X_labeled.{i}.npy: must hold {n} values (and a boolean missing mask)")
        kind = column["kind"]
        if kind == "category":
            categories = column.get("categories")
            if not isinstance(categories, list) or values.dtype != np.int32 or (
                    len(values) and not (-1 <= values.min() and values.max() < len(categories))):
                raise ValueError(f"X_labeled.{i}.npy: category codes out of range")
            series = pd.Series(pd.Categorical.from_codes(values, categories, ordered=bool(column.get("ordered"))))
        elif kind == "numpy":
            if values.dtype.kind not in "biufmM" or str(values.dtype) != column.get("dtype"):
                raise ValueError(f"X_labeled.{i}.npy: dtype {values.dtype}, but learner.json says "
                                 f"{column.get('dtype')!r}")
            series = pd.Series(values)
        elif kind == "nullable":
            if column.get("dtype") not in _NULLABLE or missing is None:
                raise ValueError(f"fitted.frame.columns[{i}]: not a nullable dtype")
            series = pd.Series(pd.array(values, dtype=column["dtype"]))
            series[missing] = pd.NA
        else:
            if values.dtype.kind != "U" or missing is None:
                raise ValueError(f"X_labeled.{i}.npy: must hold strings")
            objects = values.astype(object)
            objects[missing] = np.nan if column.get("dtype") == "object" else None
            series = pd.Series(objects, dtype=column.get("dtype") if column.get("dtype") != "object" else object)
        data[i] = series
    frame = pd.DataFrame(data)
    frame.columns = [column.get("name") for column in columns]
    if description["array"] is not None:
        dtype, shape = description["array"]
        return frame.to_numpy(dtype=np.dtype(dtype)).reshape(n, *shape)
    return frame
