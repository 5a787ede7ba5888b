"""The pandas-2 positional fallback that ANTARES filters rely on, on any pandas.

ANTARES filters were written for pandas 1/2, where ``series[-1]`` on a Series whose index is not
numeric (the light-curve frames are indexed by time) falls back to the position: the last value.
pandas 3 removed that fallback, so ``df["ant_mag"][-1]`` (``siena_mag_coord_cut``, the devkit's
``test_dev_*`` filters) raises ``KeyError: -1``. Rather than pinning pandas < 3 for everyone,
the frames ``locus.timeseries().to_pandas()`` hands out are :class:`CompatFrame`: a DataFrame whose
columns are :class:`CompatSeries`, which restore exactly that rule (an integer scalar key on a
Series whose index is neither integer nor float is a position) and change nothing else: labels,
slices, masks and ``.loc``/``.iloc`` go to pandas as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _positional(index: pd.Index, key: Any) -> bool:
    """Whether pandas 2 would have read integer ``key`` by position on a Series with ``index``.

    pandas 2 fell back to a position for a scalar integer key when the index was not numeric
    (``Index._should_fallback_to_positional``): integer and float indexes read labels.
    """
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        return False
    return index.dtype.kind not in "iuf" and not (index.dtype == object and index.inferred_type in (
        "integer", "mixed-integer", "floating", "mixed-integer-float"))


class CompatSeries(pd.Series):
    """A Series with pandas 2's positional fallback for integer keys on a non-numeric index."""

    @property
    def _constructor(self):
        return CompatSeries

    @property
    def _constructor_expanddim(self):
        return CompatFrame

    def __getitem__(self, key: Any) -> Any:
        if _positional(self.index, key):
            return self.iloc[key]
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if _positional(self.index, key):
            self.iloc[key] = value
            return
        super().__setitem__(key, value)


class CompatFrame(pd.DataFrame):
    """A DataFrame whose columns are :class:`CompatSeries` (and whose derived frames stay compatible)."""

    @property
    def _constructor(self):
        return CompatFrame

    @property
    def _constructor_sliced(self):
        return CompatSeries


def compat_frame(df: pd.DataFrame) -> CompatFrame:
    """``df`` as a :class:`CompatFrame`, sharing its data (no copy)."""
    return CompatFrame(df, copy=False)
