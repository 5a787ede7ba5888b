"""The filter contract and the loading of filter code.

A filter is a class with the ANTARES devkit's shape: ``REQUIRED_LOCUS_PROPERTIES``,
``REQUIRED_ALERT_PROPERTIES``, ``REQUIRED_TAGS``, ``TRIGGERING_SURVEY``,
``REQUIRED_GRAV_WAVE_PROB_REGION``, ``OUTPUT_LOCUS_TAGS``, ``OUTPUT_LOCUS_PROPERTIES``,
``setup()`` and ``_run(locus)``. Classes deriving from ``antares_devkit.models.BaseFilter`` run
unmodified; Albireo's own :class:`BaseFilter` is the same contract without the devkit dependency.

Loading turns every failure (syntax error, missing package, an exception on import or in
``setup()``) into a :class:`FilterLoadError` whose message says what to fix.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import linecache
import sys
import types
from typing import Any

from broker.locus import SURVEYS, Locus

PROPERTY_PREFIX = {"ztf": "ztf_", "decat": "decat_", "lsst": "lsst_"}


class BaseFilter(abc.ABC):
    """Albireo's filter base class: the ANTARES devkit contract, no devkit needed."""

    REQUIRED_LOCUS_PROPERTIES: list[str] = []
    REQUIRED_TAGS: list[str] = []
    REQUIRED_ALERT_PROPERTIES: list[str] = []
    TRIGGERING_SURVEY: str = "all"
    OUTPUT_LOCUS_TAGS: list[dict[str, str]] = []
    OUTPUT_LOCUS_PROPERTIES: list[dict[str, Any]] = []
    REQUIRED_GRAV_WAVE_PROB_REGION: float | None = None

    def __init__(self) -> None:
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook, as in the devkit
        """Load models or files once, when the filter is instantiated."""

    @abc.abstractmethod
    def _run(self, locus: Locus) -> None:
        raise NotImplementedError


def satisfies_constraints(f: Any, locus: Locus) -> bool:
    """The devkit's constraint rules, applied to any filter class (ours or the devkit's)."""
    props = locus.properties
    for prop in getattr(f, "REQUIRED_LOCUS_PROPERTIES", []):
        if prop not in props:
            return False
    for tag in getattr(f, "REQUIRED_TAGS", []):
        if tag not in locus.tags:
            return False
    alert = locus.alert
    survey = alert.properties["ant_survey"]
    for prop in getattr(f, "REQUIRED_ALERT_PROPERTIES", []):
        for name, prefix in PROPERTY_PREFIX.items():
            if prop.startswith(prefix) and survey not in SURVEYS[name]:
                break
        else:
            if prop not in alert.properties:
                return False
    max_level = getattr(f, "REQUIRED_GRAV_WAVE_PROB_REGION", None)
    if max_level and not any(gw["contour_level"] <= max_level for gw in alert.grav_wave_events):
        return False
    trig = getattr(f, "TRIGGERING_SURVEY", "all")
    return trig == "all" or survey in SURVEYS[trig]


def source_hash(cls: type) -> str:
    """A revision id for a filter class: the hash of its module's source."""
    try:
        src = inspect.getsource(inspect.getmodule(cls))
    except (OSError, TypeError):
        src = cls.__qualname__
    return hashlib.sha256(src.encode()).hexdigest()[:12]


def code_hash(code: str) -> str:
    """The full SHA-256 of a filter's source: the revision id is its first 12 hex digits."""
    return hashlib.sha256(code.encode()).hexdigest()


# ---- loading filter code --------------------------------------------------------------------
class FilterLoadError(Exception):
    """A filter's code cannot be loaded; ``missing`` names the absent dependency, if that is why."""

    def __init__(self, message: str, missing: str | None = None):
        super().__init__(message)
        self.missing = missing


def load_filter_module(code: str, module_name: str, filename: str = "<filter>") -> types.ModuleType:
    """Execute filter source as a fresh module (registered in ``sys.modules`` so tracebacks and pickling work).

    Every failure becomes a :class:`FilterLoadError` whose message says what to fix:
    the line of a syntax error, the name of a missing package, or the exception raised on import.
    """
    try:
        compiled = compile(code, filename, "exec")
    except SyntaxError as exc:
        raise FilterLoadError(f"syntax error in {filename} line {exc.lineno}: {exc.msg}") from None
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compiled, module.__dict__)
    except ModuleNotFoundError as exc:
        sys.modules.pop(module_name, None)
        raise FilterLoadError(f"cannot load: missing dependency {exc.name!r} ({exc})", missing=exc.name) from None
    except BaseException as exc:  # SystemExit and friends included: importing must not end the process
        sys.modules.pop(module_name, None)
        raise FilterLoadError(f"importing {filename} raised {type(exc).__name__}: {exc}") from None
    return module


def instantiate(cls: type) -> Any:
    """``cls()`` (which runs ``setup()``), turning failures into :class:`FilterLoadError`."""
    try:
        return cls()
    except ModuleNotFoundError as exc:
        raise FilterLoadError(f"cannot load {cls.__name__}: missing dependency {exc.name!r}", missing=exc.name) from None
    except BaseException as exc:
        raise FilterLoadError(f"{cls.__name__}.setup() raised {type(exc).__name__}: {exc}") from None


def filter_classes_in_code(code: str, module_name: str = "albireo_filter_probe") -> list[type]:
    """The filter classes a source file defines (loading it in this process: only for trusted callers)."""
    return find_filter_classes(load_filter_module(code, module_name))


def find_filter_classes(module: Any) -> list[type]:
    """Concrete filter classes defined in ``module`` (ours or devkit subclasses)."""
    out = []
    for obj in vars(module).values():
        if (
            inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and hasattr(obj, "_run")
            and not inspect.isabstract(obj)
            and hasattr(obj, "OUTPUT_LOCUS_TAGS")
        ):
            out.append(obj)
    return out
