"""Old scikit-learn tree pickles, readable by the scikit-learn installed here.

Devkit filters ship models pickled years ago (``IF_anomaly_detection``: an ``IsolationForest``
from scikit-learn 0.24). scikit-learn 1.3 added a ``missing_go_to_left`` field to every tree
node and refuses node arrays without it (``node array from the pickle has an incompatible
dtype``), and no scikit-learn that still has the old layout installs beside numpy 2. Such a
model never saw a missing value, so the field's value is irrelevant to what it predicts for
finite input; older scikit-learn sent NaN right, which ``0`` preserves.

:func:`install` makes the name pickles refer to (``sklearn.tree._tree.Tree``) a subclass that adds
the field when it is absent and changes nothing else; trees scikit-learn builds itself keep the
original class. It is installed in the processes that load filter code (the sandbox children and
:func:`broker.filtering.contract.load_filter_module`), never to unpickle anything of the broker's
own: the filter unpickles its own file, inside its own sandbox.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

_installed = False
#: scikit-learn's compiled modules that ``cimport`` ``sklearn.tree._tree`` (found in their binaries).
_CIMPORTERS = ("sklearn.tree._splitter", "sklearn.tree._utils", "sklearn.tree._partitioner",
               "sklearn.tree._criterion", "sklearn.ensemble._gradient_boosting", "sklearn.neighbors._quad_tree")


def upgrade_node_array(nodes: Any) -> Any:
    """A tree node array with ``missing_go_to_left`` (0) added when the pickle predates it."""
    import numpy as np

    names = getattr(getattr(nodes, "dtype", None), "names", None)
    if not names or "missing_go_to_left" in names:
        return nodes
    fields = [(n, nodes.dtype.fields[n][0]) for n in names] + [("missing_go_to_left", np.uint8)]
    out = np.zeros(nodes.shape, dtype=fields)
    for n in names:
        out[n] = nodes[n]
    return out


def install() -> None:
    """Install the shim once per process, at no cost until the filter imports scikit-learn.

    Importing scikit-learn in every filter process (most never use it) costs time and memory and
    starts its thread pools, so the patch waits: if ``sklearn.tree`` is already imported it is
    applied now, otherwise right after the first import of ``sklearn.tree`` (which a pickle of a
    tree triggers before it looks the class up).
    """
    global _installed
    if _installed:
        return
    _installed = True
    if "sklearn.tree" in sys.modules:
        _patch()
    else:
        sys.meta_path.insert(0, _AfterSklearnTree())


class _AfterSklearnTree(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``sklearn.tree`` so that :func:`_patch` runs after it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "sklearn.tree":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_patch(module: Any) -> None:
            exec_module(module)
            _patch()

        loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec


def _patch() -> None:
    """Make ``sklearn.tree._tree.Tree`` the upgrading subclass (after the modules that cimport it)."""
    import copyreg

    from sklearn.tree import _tree

    # the compiled modules that cimport Tree read its vtable from this name when first imported:
    # import them before the name changes
    for mod in _CIMPORTERS:
        importlib.import_module(mod)
    base = _tree.Tree

    class Tree(base):  # type: ignore[misc, valid-type]
        """``sklearn.tree._tree.Tree`` that reads node arrays pickled before scikit-learn 1.3."""

        def __setstate__(self, state: dict) -> None:
            if isinstance(state, dict) and "nodes" in state:
                state = dict(state, nodes=upgrade_node_array(state["nodes"]))
            super().__setstate__(state)

    Tree.__module__ = base.__module__
    Tree.__qualname__ = Tree.__name__ = base.__name__
    _tree.Tree = Tree
    # trees scikit-learn builds are of the original class, which pickle can no longer find by name:
    # pickle them as the subclass (same state; it unpickles to the same tree)
    # (the compiled ``__reduce__`` names the original class, for its own instances and the subclass's)
    def reduce(t: Any) -> tuple:
        return (Tree, *t.__reduce__()[1:])

    copyreg.pickle(base, reduce)
    copyreg.pickle(Tree, reduce)
