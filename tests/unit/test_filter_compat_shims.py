"""What the compatibility shims change for filters, and what they leave to pandas / scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from broker.filtering.pandas_compat import CompatFrame, CompatSeries, compat_frame


def _frame() -> CompatFrame:
    idx = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"], name="time")
    return compat_frame(pd.DataFrame({"ant_mag": [18.0, 17.5, 17.0], "band": ["g", "R", "g"]}, index=idx))


def test_integer_keys_are_positions_on_a_time_index_as_in_pandas_2():
    df = _frame()
    s = df["ant_mag"]
    assert isinstance(s, CompatSeries)
    assert s[-1] == 17.0 and s[0] == 18.0 and s[np.int64(1)] == 17.5
    assert df[df["ant_mag"] < 18]["ant_mag"][-1] == 17.0  # derived frames and columns keep the rule
    assert df.copy(deep=True)["band"][-1] == "g"
    with pytest.raises(IndexError):
        s[3]
    s2 = s.copy()
    s2[-1] = 1.0
    assert s2.iloc[-1] == 1.0 and s.iloc[-1] == 17.0


def test_labels_and_numeric_indexes_are_left_to_pandas():
    df = _frame()
    assert df["ant_mag"][pd.Timestamp("2020-01-02")] == 17.5
    assert list(df["ant_mag"][1:]) == [17.5, 17.0]
    numeric = CompatSeries([1.0, 2.0, 3.0], index=[10, 20, 30])
    assert numeric[20] == 2.0
    with pytest.raises(KeyError):
        numeric[-1]  # an integer index reads labels, in pandas 2 as in 3


def test_an_old_scikit_learn_tree_pickle_loads_and_predicts_as_before():
    """A node array without ``missing_go_to_left`` (pickled before scikit-learn 1.3) gains it, as 0.

    Run in a fresh interpreter: the shim is installed there before scikit-learn is imported,
    as in a filter process.
    """
    code = r'''
import pickle, numpy as np
from broker.filtering import sklearn_compat
sklearn_compat.install()
from sklearn.tree import DecisionTreeRegressor
m = DecisionTreeRegressor(random_state=0).fit(np.arange(20.0).reshape(-1, 1), np.arange(20.0) ** 2)
tree_state = m.tree_.__getstate__()
nodes = tree_state["nodes"]
old = np.zeros(nodes.shape, dtype=[(n, nodes.dtype.fields[n][0]) for n in nodes.dtype.names if n != "missing_go_to_left"])
for n in old.dtype.names:
    old[n] = nodes[n]
tree_state["nodes"] = old
_, args, _ = m.tree_.__reduce__()
from sklearn.tree import _tree
t = _tree.Tree(*args)  # what unpickling does: the class found by its name
t.__setstate__(tree_state)
m.tree_ = t
x = np.array([[3.2], [11.7]])
print(m.predict(x).tolist(), pickle.loads(pickle.dumps(m)).predict(x).tolist())
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    a, b = out.stdout.strip().split("] [")
    assert a + "]" == "[" + b == str([9.0, 144.0])
