"""The light-curve table filters receive: the devkit's astropy ``TimeSeries``, made cheap to use.

ANTARES filters read ``locus.timeseries()`` as an astropy ``TimeSeries`` whose
columns are ``Column`` / ``MaskedColumn``. They must keep receiving exactly that:
same column names, dtypes, values, masks, same types from indexing. What they
do with it is often plain Python: ``min(column)``, ``for x in column``,
``list(column)``. astropy serves each element of such a loop through its
generic ``__getitem__`` (Cython shim for ``Column``, pure-Python
``MaskedArray.__getitem__`` for ``MaskedColumn``), 6× to 200× slower than
iterating the underlying ndarray, for the very same numpy scalars.

:class:`LightCurveTable` is a ``TimeSeries`` whose columns are the subclasses
below. They only change *how* elements are produced when iterating a
one-dimensional column, never *what* is produced: a ``Column`` yields the
numpy scalars ``ndarray`` iteration yields (bytes columns, which astropy
decodes to ``str``, keep astropy's path); a ``MaskedColumn`` yields the data's
numpy scalars and ``numpy.ma.masked`` where masked, exactly as
``MaskedArray.__getitem__`` does. Columns derived from them (slices,
arithmetic, ``np.abs``) keep the class, so a filter's ``np.abs(t - col)``
loop is fast too. ``tests/unit/test_lightcurve.py`` holds them to astropy's
behaviour element by element.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from astropy.table import Column, MaskedColumn
from astropy.timeseries import TimeSeries


def _plain_iterable(col: np.ndarray) -> bool:
    """True when iterating the bare ndarray yields what astropy's ``__getitem__`` would."""
    return col.ndim == 1 and col.dtype.char != "S" and col.dtype.names is None


class LightCurveColumn(Column):
    """An astropy ``Column`` whose 1-D iteration runs at ndarray speed (same scalars)."""

    def __iter__(self) -> Iterator[Any]:
        if _plain_iterable(self):
            return iter(self.view(np.ndarray))
        return super().__iter__()


class LightCurveMaskedColumn(MaskedColumn):
    """An astropy ``MaskedColumn`` whose 1-D iteration runs at ndarray speed (same scalars, same ``masked``)."""

    def __iter__(self) -> Iterator[Any]:
        if not _plain_iterable(self):
            return super().__iter__()
        data = self.view(np.ndarray)
        mask = np.ma.getmaskarray(self)
        if not mask.any():
            return iter(data)
        return _masked_iter(data, mask)


def _masked_iter(data: np.ndarray, mask: np.ndarray) -> Iterator[Any]:
    masked = np.ma.masked
    for value, hidden in zip(data, mask.tolist(), strict=True):
        yield masked if hidden else value


class LightCurveTable(TimeSeries):
    """The devkit's ``TimeSeries``, with :class:`LightCurveColumn` / :class:`LightCurveMaskedColumn` columns."""

    Column = LightCurveColumn
    MaskedColumn = LightCurveMaskedColumn

    def copy(self, copy_data: bool = True) -> LightCurveTable:
        """``Table.copy``, keeping the time column's already-computed representations.

        Every ``locus.timeseries()`` call hands a filter a copy; without this, each
        copy's first ``to_pandas()`` recomputes the same ``datetime64`` values
        (about 40 ms for 4,000 alerts). The carried values are copies too, so a
        filter that writes into one cannot reach another filter's table.
        """
        if copy_data and not self.indices and not hasattr(self, "_groups"):
            new = self._copy_columns()
        else:
            new = super().copy(copy_data=copy_data)
        carry_time_cache(self, new, copy=True)
        return new

    def _copy_columns(self) -> LightCurveTable:
        """``Table.copy()`` the way astropy itself assembles a sliced table (a third faster).

        ``Table.copy`` re-runs the whole constructor on ``self`` (name checks,
        per-column class negotiation); the columns it ends up with are
        ``col_copy(col)``. This makes those same column copies and attaches
        them as ``Table._new_from_slice`` does. Tables with indices or groups
        take astropy's path.
        """
        from astropy.table.column import col_copy

        new = self.__class__(masked=self.masked)
        new.meta = deepcopy(self.meta)
        new.primary_key = self.primary_key
        columns = [col_copy(col) for col in self.columns.values()]
        self._make_table_from_cols(new, columns, verify=False, names=list(self.columns.keys()))
        return new

    #: The shared, never-handed-out table this one was copied from (set by ``Locus.timeseries``).
    pristine_source: LightCurveTable | None = None
    _frame: Any = None

    def to_pandas(self):
        """``TimeSeries.to_pandas``: the same DataFrame, made once per locus instead of once per call.

        Filters call ``locus.timeseries().to_pandas()`` on a fresh copy, so every
        such frame is the same. When this table still holds exactly what its
        shared source holds (names, column kinds, dtypes, values, masks, times:
        checked, not assumed), the answer is a deep copy of the source's frame;
        a table a filter has changed is converted afresh. Either way the frame
        is the filter's own, as astropy's is.
        """
        source = self.pristine_source
        if source is not None and same_content(self, source):
            if source._frame is None:
                source._frame = source._convert_to_pandas()
            return source._frame.copy(deep=True)
        return self._convert_to_pandas()

    def _convert_to_pandas(self):
        """astropy's conversion, without ``TimeSeries.to_pandas``'s up-front copy of the whole table.

        astropy's version is ``Table(self).to_pandas(index="time")``: it copies
        every column before converting, but conversion never writes to the
        table, and ``pandas.DataFrame`` copies the arrays it is given (its
        default for a dict of columns). ``tests/unit/test_lightcurve.py``
        compares the frames.
        """
        from astropy.table import Table

        from broker.filtering.pandas_compat import compat_frame

        view = Table(self, copy=False)
        carry_time_cache(self, view, copy=False)  # _encode_mixins copies the datetime64 values it takes
        # pandas-2 positional ``series[-1]`` for the filters written for it (see broker/filtering/pandas_compat.py)
        return compat_frame(view.to_pandas(index="time"))


def same_content(a: LightCurveTable, b: LightCurveTable) -> bool:
    """Whether two light-curve tables hold the same data: what ``to_pandas`` reads, compared exactly."""
    if a.colnames != b.colnames or len(a) != len(b):
        return False
    for name in a.colnames:
        x, y = a[name], b[name]
        if name == "time":
            if not (type(x) is type(y) and x.format == y.format and x.scale == y.scale
                    and np.array_equal(x.jd1, y.jd1) and np.array_equal(x.jd2, y.jd2)
                    and np.array_equal(x.mask, y.mask)):
                return False
            continue
        if type(x) is not type(y) or x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not np.array_equal(np.ma.getdata(x).view(np.ndarray), np.ma.getdata(y).view(np.ndarray),
                              equal_nan=x.dtype.kind in "fc"):
            return False
        if isinstance(x, MaskedColumn) and not np.array_equal(np.ma.getmaskarray(x), np.ma.getmaskarray(y)):
            return False
    return True


def carry_time_cache(source, target, *, copy: bool) -> None:
    """Give ``target``'s time column the representations ``source``'s has already computed."""
    if "time" not in source.colnames or "time" not in target.colnames:
        return
    cached = source["time"].cache["format"]
    if cached:
        target["time"].cache["format"].update({k: (v.copy() if copy else v) for k, v in cached.items()})


#: Python types for which astropy's list → column conversion is exactly ``np.array(values)``.
_PLAIN_TYPES = frozenset({float, int, str, bool})


def build_table(ids: Sequence[str], properties: Sequence[Mapping[str, Any]], times: Sequence[Any]) -> LightCurveTable:
    """The table ``TimeSeries(data=[{"alert_id": id, **props}, ...], time=times)`` would build, column-wise.

    astropy's list-of-dicts path walks every (row, column) pair in Python three
    times (gather, fill, type-sniff); here each column is one list
    comprehension and one ``np.array``, and which rows lack a property is
    decided once per distinct set of keys (alert "shape"), not once per row. The result is the same table: columns in
    first-appearance order, astropy's dtype inference (``np.array`` of the
    values, which is what astropy does for plain ``int``/``float``/``str``/
    ``bool`` values; anything else goes through astropy's own converter), and a
    ``MaskedColumn`` wherever some alert lacks the property, masked there, with
    the column's first value underneath as astropy leaves it.
    ``tests/unit/test_lightcurve.py`` compares both builds on real loci.
    """
    from astropy.table.column import _convert_sequence_data_to_array

    n = len(ids)
    # Alerts come in a few shapes (detections, upper limits, schema versions): which
    # properties a row lacks is a property of its shape, found once per shape.
    shapes: dict[tuple[str, ...], int] = {}
    shape_of = np.empty(n, dtype=np.intp)
    for i, p in enumerate(properties):
        shape_of[i] = shapes.setdefault(tuple(p), len(shapes))
    names: dict[str, None] = {"alert_id": None}
    for keys in shapes:
        names.update(dict.fromkeys(keys))
    _, shape_first_row = np.unique(shape_of, return_index=True)  # shapes are numbered 0.. in order of appearance
    columns, masked = [], {}
    for name in names:
        has = np.fromiter((name in keys for keys in shapes), dtype=bool, count=len(shapes))
        if name == "alert_id" and not has.all():  # the devkit's row is {"alert_id": id, **properties}
            values = [p.get("alert_id", i) for i, p in zip(ids, properties, strict=True)]
        elif has.all():
            values = [p[name] for p in properties]
        else:
            missing = ~has[shape_of]
            first = properties[int(shape_first_row[has].min())][name]  # astropy fills gaps with the first value
            values = [p.get(name, first) for p in properties]
            masked[name] = np.flatnonzero(missing)
        kinds = set(map(type, values))
        data = np.array(values) if kinds <= _PLAIN_TYPES else _convert_sequence_data_to_array(values)
        columns.append(LightCurveMaskedColumn(data, name=name) if name in masked else data)
    table = LightCurveTable(data=columns, names=list(names), time=list(times), copy=False)
    for name, missing in masked.items():  # astropy's own masking step, so the data under the mask match too
        table[name][missing] = np.ma.masked
    return table
