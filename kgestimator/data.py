"""Triples: validation, label vocabularies and encoding.

A knowledge graph is handled as an array of shape ``(n_triples, 3)`` whose
columns are ``(head, relation, tail)`` labels.  Labels are either all
integers (``int64``) or all strings (numpy unicode arrays); :func:`check_triples`
normalises every accepted input to one of those two forms so the rest of the
library only ever sees two dtypes. Files and synthetic graphs live in
:mod:`kgestimator.datasets`.
"""

import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from itertools import repeat

import numpy as np

# files and synthetic graphs moved to datasets.py; kgestimator.data.load_dataset & co. keep working
from .datasets import (DATA_ENV_VAR, dataset_dir, find_named_dataset, load_dataset,  # noqa: F401
                       load_triples, make_kg)


__all__ = [
    "check_triples",
    "encode",
    "build_vocabulary",
    "load_triples",
    "load_dataset",
    "dataset_dir",
    "make_kg",
]

_COLUMN_NAMES = ("head", "relation", "tail")
_INT64_LIMIT = 2.0**63
DATA_ENV_VAR = "KGESTIMATOR_DATA"


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def check_triples(X, *, n_columns=3, name="X", columns=None):
    """Validate triples and convert them to an int64 or unicode array.

    Parameters
    ----------
    X : array-like of shape (n_triples, 3)
        ``(head, relation, tail)`` labels: a numpy array (strings, integers,
        integral floats or objects), a list of lists or tuples, or a pandas
        DataFrame.  A DataFrame whose columns include ``head``, ``relation``
        and ``tail`` (any order, any case) is read by those names, other
        columns ignored; otherwise its columns are taken in order.  With
        ``n_columns=2`` an array of
        ``(head, relation)`` queries of shape ``(n_queries, 2)`` is accepted
        as well, and a third (tail) column is accepted and dropped; a
        DataFrame with only ``head`` and ``relation`` (or ``relation`` and
        ``tail``) columns is read by name in that order.
    n_columns : {3, 2}, default=3
        Number of columns to return.
    name : str, default="X"
        Name of the argument, used in error messages.
    columns : tuple of str, default=None
        With ``n_columns=2``, which two of ``("head", "relation", "tail")``
        to return, in that order: ``("relation", "tail")`` checks head
        queries, and drops the head column of 3-column input. Default: the
        first ``n_columns``.

    Returns
    -------
    triples : ndarray of shape (n_triples, n_columns)
        ``int64`` when every label is an integer (integer arrays, Python or
        numpy integers, or floats that are all finite and integral),
        otherwise a numpy unicode array (dtype kind ``'U'``), never
        ``object``.  When integers and strings are mixed in one input, every
        label is converted with ``str``, so label ``1`` and label ``"1"``
        are the same label (and integral float ``1.0`` is also ``"1"``).
        String labels are kept exactly as given (no whitespace stripping).

    Raises
    ------
    TypeError
        If `X` is not array-like (a dict, a set, a scalar, a string, ...)
        or holds labels that are neither strings nor numbers.
    ValueError
        If `X` has the wrong shape, has no rows, contains a missing value
        (``None``, NaN, ``pd.NA``), an empty-string label, a label with a
        NUL character (numpy strings silently drop trailing ones), a
        boolean, a non-integral or non-finite float, or an integer outside
        the int64 range.  Messages name the first offending row and column.

    Examples
    --------
    >>> check_triples([["a", "likes", "b"]])
    array([['a', 'likes', 'b']], dtype='<U5')
    >>> check_triples([[0, 1, 2]]).dtype
    dtype('int64')
    """
    if n_columns not in (2, 3):
        raise ValueError(f"n_columns must be 2 or 3, got {n_columns!r}")
    columns = _COLUMN_NAMES[:n_columns] if columns is None else tuple(columns)
    if len(columns) != n_columns or columns != tuple(c for c in _COLUMN_NAMES if c in columns):
        raise ValueError(f"columns must be {n_columns} of {_COLUMN_NAMES} in that order, got {columns!r}")
    arr = _as_array(X, name)
    if arr.ndim >= 1 and arr.shape[0] == 0:
        raise ValueError(
            f"{name} is empty (shape {arr.shape}): at least one "
            f"{'triple' if n_columns == 3 else 'query'} is required"
        )
    allowed = (3,) if n_columns == 3 else (2, 3)
    if arr.ndim != 2 or arr.shape[1] not in allowed:
        raise ValueError(_shape_message(name, arr.shape, columns))
    # The ignored column of queries is dropped before validation, so a
    # placeholder (even NaN) there is harmless. `cols` pairs each kept column
    # with its position in X, for error messages.
    if arr.shape[1] == n_columns:
        cols = tuple(enumerate(columns))
    else:
        keep = [_COLUMN_NAMES.index(c) for c in columns]
        arr = arr[:, keep]
        cols = tuple((j, _COLUMN_NAMES[j]) for j in keep)

    kind = arr.dtype.kind
    if kind == "U":
        _check_no_empty_strings(arr, name, cols)
        _check_no_nul(arr, name, cols)
        return arr
    if kind in "iu":
        return _ints_to_int64(arr, name, cols)
    if kind == "f":
        return _floats_to_int64(arr, name, cols)
    if kind == "O":
        return _objects_to_labels(arr, name, cols)
    if kind == "b":
        raise ValueError(
            f"{name} has boolean dtype; booleans are not valid labels "
            "(use strings or integers)"
        )
    if kind == "S":
        raise TypeError(
            f"{name} holds byte strings (dtype {arr.dtype}); decode them to "
            "str first, e.g. np.char.decode(X, 'utf-8')"
        )
    raise TypeError(
        f"{name} has unsupported dtype {arr.dtype}; labels must be strings "
        "or integers"
    )


def _shape_message(name, shape, columns):
    if len(columns) == 3:
        expected = "(n_triples, 3) holding (head, relation, tail) labels"
    else:
        (dropped,) = set(_COLUMN_NAMES) - set(columns)
        which = {"head": "first", "relation": "second", "tail": "third"}[dropped]
        expected = (
            f"(n_queries, 2) holding ({', '.join(columns)}) labels, or "
            f"(n_queries, 3) whose {which} ({dropped}) column is ignored"
        )
    msg = f"{name} must be a 2-D array of shape {expected}; got shape {shape}"
    if len(shape) == 2:
        msg += f" (n_samples = {shape[0]}, n_features = {shape[1]})"
        if shape[1] < 2:
            msg += f": {shape[1]} feature(s) (shape={shape}) while a minimum of 2 is required."
    if len(shape) == 1 and shape[0] in (2, 3):
        msg += ". Reshape your data: for a single triple use np.reshape(X, (1, -1))"
    return msg


def _as_array(X, name):
    """Turn any accepted container into a numpy array (not yet validated)."""
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{name}: sparse input is not supported; pass a dense (n_triples, 3) "
            "array of labels"
        )
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(X, pd.DataFrame):
        return _frame_to_array(X, name)
    if (
        X is None
        or isinstance(X, (str, bytes, Mapping, AbstractSet))
        or np.isscalar(X)
    ):
        raise TypeError(
            f"{name} must be an array-like of shape (n_triples, 3) (numpy "
            f"array, list of lists or pandas DataFrame); got "
            f"{type(X).__name__}"
        )
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise ValueError(f"{name}: Complex data not supported as labels")
        return X
    if isinstance(X, (list, tuple)):
        # dtype=object keeps 1, "1" and 2.5 apart until they are validated;
        # letting numpy infer a dtype would silently stringify mixed rows.
        try:
            arr = np.array(X, dtype=object)
        except ValueError as exc:
            raise ValueError(
                f"{name} rows have different lengths: every row must hold "
                f"exactly 3 labels ({exc})"
            ) from None
        if arr.ndim == 1 and arr.size and isinstance(arr[0], (list, tuple, np.ndarray)):
            raise ValueError(
                f"{name} rows have different lengths: every row must hold "
                "exactly 3 labels (head, relation, tail)"
            )
        return arr
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001 - any failure means "not array-like"
        raise TypeError(
            f"{name} must be an array-like of shape (n_triples, 3); "
            f"could not convert {type(X).__name__}: {exc}"
        ) from exc
    if arr.ndim == 0:
        raise TypeError(
            f"{name} must be an array-like of shape (n_triples, 3); got "
            f"{type(X).__name__}"
        )
    return arr


#: named column sets of a DataFrame, read in this order (see check_triples)
_NAMED_LAYOUTS = (_COLUMN_NAMES, ("head", "relation"), ("relation", "tail"))


def column_roles(X):
    """The named columns of a DataFrame ``X`` that :func:`check_triples` reads, or None.

    ``('head', 'relation', 'tail')``, ``('head', 'relation')`` or
    ``('relation', 'tail')`` when ``X`` is a DataFrame with those columns (any
    order, any case); None for anything else, whose columns are positional.
    """
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(X, pd.DataFrame):
        return None
    names = {str(c).lower() for c in X.columns}
    return next((layout for layout in _NAMED_LAYOUTS if names.issuperset(layout)), None)


def _check_unambiguous_columns(df, name):
    """Refuse a DataFrame where a role name (any case) labels more than one column."""
    seen = {}
    for c in df.columns:
        low = str(c).lower()
        if low in _COLUMN_NAMES:
            seen.setdefault(low, []).append(c)
    clash = {role: cs for role, cs in seen.items() if len(cs) > 1}
    if clash:
        role, cs = next(iter(clash.items()))
        raise ValueError(
            f"{name}: the DataFrame has {len(cs)} columns named {role!r} (any case): {[str(c) for c in cs]}; "
            "column names are read without regard to case, so keep one of them"
        )


def _frame_to_array(df, name="X"):
    _check_unambiguous_columns(df, name)
    roles = column_roles(df)
    if roles is not None:
        by_name = {str(c).lower(): c for c in df.columns}
        df = df[[by_name[role] for role in roles]]
    kinds = {getattr(dtype, "kind", "O") for dtype in df.dtypes}
    # Plain integer columns convert without a detour through Python objects.
    if kinds and kinds <= set("iu") and all(isinstance(d, np.dtype) for d in df.dtypes):
        return df.to_numpy()
    return df.to_numpy(dtype=object)


def _show(value):
    """repr of a label, without numpy's ``np.float64(...)`` wrapper."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _position(flat_index, cols):
    """``cols``: ``(column in X, column name)`` of each column of the checked array."""
    row, col = divmod(int(flat_index), len(cols))
    return f"row {row}, column {cols[col][0]} ({cols[col][1]})"


def _check_no_empty_strings(arr, name, cols):
    empty = arr == ""
    if empty.any():
        where = _position(np.argmax(empty.ravel()), cols)
        raise ValueError(f"{name} contains an empty-string label at {where}")


def _check_no_nul(arr, name, cols):
    """Refuse NUL characters inside the labels of a numpy unicode array, as for other inputs.

    numpy pads with NULs, so only a NUL before the end of a label is one: the
    label then holds fewer non-NUL code points than its length.
    """
    if not arr.size or arr.dtype.itemsize == 0:
        return
    flat = np.ascontiguousarray(arr).reshape(-1)
    codes = flat.view(np.uint32).reshape(flat.size, -1)
    lengths = np.char.str_len(flat)
    # one count over the whole array; the per-label pass only when there is a NUL to locate
    if np.count_nonzero(codes) != lengths.sum():
        i = int(np.argmax(np.count_nonzero(codes, axis=1) < lengths))
        raise ValueError(
            f"{name} contains the label {str(arr.reshape(-1)[i])!r} with a NUL character at "
            f"{_position(i, cols)}; labels cannot hold NUL characters"
        )


def _ints_to_int64(arr, name, cols):
    if arr.dtype.kind == "u" and arr.dtype.itemsize >= 8:
        too_big = arr > np.iinfo(np.int64).max
        if too_big.any():
            i = np.argmax(too_big.ravel())
            raise ValueError(
                f"{name} holds integer label {arr.ravel()[i]} outside the "
                f"int64 range at {_position(i, cols)}"
            )
    return arr.astype(np.int64, copy=False)


def _floats_to_int64(arr, name, cols):
    flat = arr.ravel()
    nan = np.isnan(flat)
    if nan.any():
        where = _position(np.argmax(nan), cols)
        raise ValueError(f"{name} contains a missing value (NaN) at {where}")
    bad = ~_integral_floats(flat)
    if bad.any():
        i = np.argmax(bad)
        raise ValueError(
            f"{name} contains the non-integral or non-finite float label "
            f"{_show(flat[i])} at {_position(i, cols)}; float labels must "
            "be whole numbers"
        )
    return arr.astype(np.int64)


def _integral_floats(values):
    """Mask of finite, whole floats that fit into int64."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(values)
            & (values == np.trunc(values))
            & (np.abs(values) < _INT64_LIMIT)
        )


def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return value != value
    # pd.NA and pd.NaT, recognised without importing pandas.
    return type(value).__name__ in ("NAType", "NaTType")


def _objects_to_labels(arr, name, cols):
    flat = arr.ravel()
    types = set(map(type, flat))
    str_types = {t for t in types if issubclass(t, str)}
    bool_types = {t for t in types if issubclass(t, (bool, np.bool_))}
    int_types = {
        t for t in types if issubclass(t, (int, np.integer)) and t not in bool_types
    }
    float_types = {t for t in types if issubclass(t, (float, np.floating))}
    other_types = types - str_types - bool_types - int_types - float_types
    _refuse_objects(flat, name, cols, other_types, float_types, bool_types)
    if float_types:
        flat = _whole_floats_to_ints(flat, name, cols)
    if not str_types:
        try:
            return np.array(flat.tolist(), dtype=np.int64).reshape(arr.shape)
        except OverflowError:
            raise ValueError(
                f"{name} holds an integer label outside the int64 range"
            ) from None
    return _objects_to_strings(flat, types, arr.shape, name, cols)


def _refuse_objects(flat, name, cols, other_types, float_types, bool_types):
    """Raise on missing values, booleans and labels of unsupported types."""
    if other_types or float_types:
        # Only inputs that can hold a missing value pay for this scan.
        missing = np.fromiter(map(_is_missing, flat), dtype=bool, count=flat.size)
        if missing.any():
            i = np.argmax(missing)
            raise ValueError(
                f"{name} contains a missing value ({_show(flat[i])}) at "
                f"{_position(i, cols)}"
            )
    if bool_types:
        is_bool = np.fromiter(
            map(isinstance, flat, repeat((bool, np.bool_))), dtype=bool, count=flat.size
        )
        i = np.argmax(is_bool)
        raise ValueError(
            f"{name} contains the boolean label {_show(flat[i])} at "
            f"{_position(i, cols)}; booleans are not valid labels"
        )
    if other_types:
        is_other = np.fromiter(
            (type(v) in other_types for v in flat), dtype=bool, count=flat.size
        )
        i = np.argmax(is_other)
        raise TypeError(
            f"{name} contains a label of unsupported type "
            f"{type(flat[i]).__name__} at {_position(i, cols)}; labels "
            "must be strings or integers"
        )


def _whole_floats_to_ints(flat, name, cols):
    """A copy of ``flat`` with its float labels as ints; raise on non-integral floats."""
    is_float = np.fromiter(
        map(isinstance, flat, repeat((float, np.floating))),
        dtype=bool,
        count=flat.size,
    )
    float_values = flat[is_float].astype(np.float64)
    bad = ~_integral_floats(float_values)
    if bad.any():
        i = np.flatnonzero(is_float)[np.argmax(bad)]
        raise ValueError(
            f"{name} contains the non-integral or non-finite float label "
            f"{_show(flat[i])} at {_position(i, cols)}; float labels must be "
            "whole numbers"
        )
    flat = flat.copy()
    # Whole floats become ints so 1.0 gives the same label as 1 and "1".
    flat[is_float] = float_values.astype(np.int64).tolist()
    return flat


def _objects_to_strings(flat, types, shape, name, cols):
    strings = flat.tolist() if types == {str} else list(map(str, flat))
    if "\x00" in "".join(strings):
        # numpy drops trailing NULs: "a\x00" would silently become label "a"
        i = next(i for i, s in enumerate(strings) if "\x00" in s)
        raise ValueError(
            f"{name} contains the label {strings[i]!r} with a NUL character at "
            f"{_position(i, cols)}; labels cannot hold NUL characters"
        )
    width = max(1, max(map(len, strings)))
    # An explicit width avoids numpy's slow per-element dtype discovery.
    out = np.array(strings, dtype=f"U{width}").reshape(shape)
    _check_no_empty_strings(out, name, cols)
    return out


# --------------------------------------------------------------------------
# Vocabularies and encoding
# --------------------------------------------------------------------------


def build_vocabulary(triples):
    """Sorted unique entity and relation labels of a set of triples.

    Parameters
    ----------
    triples : array-like of shape (n_triples, 3)
        Triples, ideally already checked with :func:`check_triples`
        (anything else is checked first).

    Returns
    -------
    entities : ndarray of shape (n_entities,)
        Sorted unique labels occurring as head or tail, equal to
        ``np.unique(np.concatenate([heads, tails]))``.
    relations : ndarray of shape (n_relations,)
        Sorted unique relation labels.
    """
    if not (
        isinstance(triples, np.ndarray)
        and triples.ndim == 2
        and triples.shape[1] == 3
        and triples.shape[0] > 0
        and (triples.dtype == np.int64 or triples.dtype.kind == "U")
    ):
        triples = check_triples(triples, name="triples")
    if triples.dtype.kind == "U":
        return (
            _sorted_unique_strings(triples[:, 0], triples[:, 2]),
            _sorted_unique_strings(triples[:, 1]),
        )
    return (
        np.unique(np.concatenate((triples[:, 0], triples[:, 2]))),
        np.unique(triples[:, 1]),
    )


def _sorted_unique_strings(*columns):
    # Hashing then sorting the few distinct labels is several times faster
    # than np.unique's sort of every (wide) unicode element, and yields the
    # same code-point order.
    labels = set()
    for column in columns:
        labels.update(column.tolist())
    return np.array(sorted(labels), dtype=str)


def encode(values, vocabulary):
    """Map labels to their positions in a sorted vocabulary.

    Parameters
    ----------
    values : array-like of any shape
        Labels to encode.  When their kind differs from the vocabulary's,
        integer values are compared as their decimal strings against a
        string vocabulary, and string values are matched against an integer
        vocabulary when they are the decimal form of one of its integers
        (``"17"``, ``"-3"``; ``"017"`` is unknown).
    vocabulary : array-like of shape (n_labels,)
        Sorted unique labels, as returned by ``np.unique`` or
        :func:`build_vocabulary`.

    Returns
    -------
    ids : ndarray of int64, same shape as `values`
        Position of each label in `vocabulary`, 0 for unknown labels.
    known : ndarray of bool, same shape as `values`
        Whether each label occurs in `vocabulary`.

    Raises
    ------
    ValueError
        If `vocabulary` is not 1-D, or is not sorted and unique.
    TypeError
        If `values` or `vocabulary` are not strings or integers.

    Examples
    --------
    >>> vocab = np.array(["a", "b", "d"])
    >>> encode(np.array(["b", "c"]), vocab)
    (array([1, 0]), array([ True, False]))
    """
    vocab = _label_array(vocabulary, "vocabulary")
    if vocab.ndim != 1:
        raise ValueError(f"vocabulary must be 1-D, got shape {vocab.shape}")
    if vocab.size > 1 and not np.all(vocab[1:] > vocab[:-1]):
        raise ValueError(
            "vocabulary must be sorted and hold unique labels, as returned "
            "by np.unique or build_vocabulary"
        )
    vals = _label_array(values, "values")

    if vocab.dtype.kind in "iu":
        vocab = vocab.astype(np.int64, copy=False)
        if vals.dtype.kind in "iu":
            return _lookup(vocab, vals.astype(np.int64, copy=False))
        if vals.dtype.kind == "f":
            whole = _integral_floats(vals)
            ids, known = _lookup(vocab, np.where(whole, vals, 0).astype(np.int64))
            known &= whole
            return np.where(known, ids, 0), known
        # String values: look them up among the decimal forms of the ints.
        as_str = vocab.astype(str)
        order = np.argsort(as_str, kind="stable")
        pos, known = _lookup(as_str[order], vals)
        return np.where(known, order[pos], 0), known

    if vals.dtype.kind in "iu":
        vals = vals.astype(str)
    elif vals.dtype.kind == "f":
        whole = _integral_floats(vals)
        # Whole floats are spelled like ints ("1", not "1.0"), as in
        # check_triples; the rest can never match and stay unknown.
        spelled = np.where(whole, vals, 0).astype(np.int64).astype(str)
        ids, known = _lookup(vocab, spelled)
        known &= whole
        return np.where(known, ids, 0), known
    return _lookup(vocab, vals)


def _label_array(values, name):
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        arr = np.array(arr.tolist()) if arr.size else arr.astype(str)
        if arr.dtype.kind == "O":
            arr = arr.astype(str)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iufU":
        raise TypeError(
            f"{name} must hold string or integer labels, got dtype {arr.dtype}"
        )
    return arr


def _lookup(sorted_vocab, values):
    if sorted_vocab.size == 0:
        return np.zeros(values.shape, dtype=np.int64), np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_vocab, values)
    np.minimum(pos, sorted_vocab.size - 1, out=pos)
    known = sorted_vocab[pos] == values
    return np.where(known, pos, 0).astype(np.int64, copy=False), np.asarray(known)


def factorize_triples(triples):
    """Integer ids of checked triples: ``(ids (n, 3), n_entities, n_relations)``."""
    entities, relations = build_vocabulary(triples)
    ids = np.empty(triples.shape, dtype=np.int64)
    ids[:, 0], _ = encode(triples[:, 0], entities)
    ids[:, 1], _ = encode(triples[:, 1], relations)
    ids[:, 2], _ = encode(triples[:, 2], entities)
    return ids, entities.size, relations.size
