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
import math
import re
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
    from broker.filtering import sklearn_compat

    sklearn_compat.install()  # the devkit's models pickled by scikit-learn < 1.3 (see sklearn_compat)
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


# ---- what a filter may return ---------------------------------------------------------------
#: a tag names a stream (``<output_prefix><tag>``: a Kafka topic, a file name): Kafka's topic characters, bounded.
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
MAX_PROPERTY_NAME = 128
MAX_PROPERTY_STRING = 4096
MAX_TAGS_PER_CALL = 64
MAX_PROPERTIES_PER_CALL = 1024
_INT64 = 2**63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def declared_tags(declaration: Any) -> list[str]:
    """The tag names an ``OUTPUT_LOCUS_TAGS`` value declares (dicts with ``name``, or plain strings)."""
    if not isinstance(declaration, (list, tuple)):
        return []
    out = []
    for t in declaration[:MAX_TAGS_PER_CALL * 4]:
        name = t.get("name") if isinstance(t, dict) else t
        if isinstance(name, str):
            out.append(name)
    return out


def tag_problem(tag: Any, declared: frozenset[str] | set[str]) -> str | None:
    """Why a filter may not set ``tag`` (None: it may)."""
    if not isinstance(tag, str):
        return f"tag {tag!r} is not a string"
    if not TAG_PATTERN.fullmatch(tag):
        return (f"tag {tag[:120]!r} is not a valid stream name (1-100 characters: letters, digits, '.', '_', "
                "'-')")
    if tag not in declared:
        return f"tag {tag!r} is not declared in OUTPUT_LOCUS_TAGS"
    return None


def property_problem(key: Any, value: Any) -> str | None:
    """Why a filter may not set property ``key`` to ``value`` (None: it may).

    Names are bounded, printable and not the broker's own (``num_alerts``...); values are JSON
    scalars: strings of at most ``MAX_PROPERTY_STRING`` characters, 64-bit integers, booleans, and
    finite floats that Elasticsearch can hold.
    """
    from broker.locus import ES_FLOAT_MAX, INTERNAL_PROPERTIES

    if not isinstance(key, str) or not key:
        return f"property name {key!r} is not a non-empty string"
    if len(key) > MAX_PROPERTY_NAME or _CONTROL.search(key) or key[0] in "_." or key != key.strip():
        return f"property name {key[:140]!r} is not allowed (at most {MAX_PROPERTY_NAME} printable characters, " \
               "not starting with '_' or '.')"
    if key in INTERNAL_PROPERTIES:
        return f"property {key!r} is computed by the broker; filters may not set it"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else f"property {key!r}: integer {value} does not fit 64 bits"
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > ES_FLOAT_MAX:
            return f"property {key!r}: {value!r} is not a finite float within ±{ES_FLOAT_MAX:.3g}"
        return None
    if isinstance(value, str):
        if len(value) > MAX_PROPERTY_STRING:
            return f"property {key!r}: a string of {len(value)} characters (at most {MAX_PROPERTY_STRING})"
        return None
    return f"property {key!r}: a {type(value).__name__} is not a string, integer, float or boolean"


def screen_effects(tags: Any, props: Any, declared: frozenset[str] | set[str]) -> tuple[list[str], list[tuple[str, Any]], list[str]]:
    """Split what one filter call set into what may be applied and what may not (with the reasons).

    A tag that is invalid or not declared in ``OUTPUT_LOCUS_TAGS``, and a property whose name or
    value breaks :func:`property_problem`, are dropped; the caller charges the filter with one
    ``FilterOutputRejected`` error listing them. The valid effects of the same call are kept (as the
    effects set before an exception are).
    """
    problems: list[str] = []
    ok_tags: list[str] = []
    ok_props: list[tuple[str, Any]] = []
    if not isinstance(tags, list):
        problems.append("tags are not a list")
        tags = []
    if not isinstance(props, list):
        problems.append("properties are not a list")
        props = []
    if len(tags) > MAX_TAGS_PER_CALL:
        problems.append(f"{len(tags)} tags in one call (at most {MAX_TAGS_PER_CALL})")
        tags = tags[:MAX_TAGS_PER_CALL]
    if len(props) > MAX_PROPERTIES_PER_CALL:
        problems.append(f"{len(props)} properties in one call (at most {MAX_PROPERTIES_PER_CALL})")
        props = props[:MAX_PROPERTIES_PER_CALL]
    for t in tags:
        why = tag_problem(t, declared)
        if why:
            problems.append(why)
        elif t not in ok_tags:
            ok_tags.append(t)
    for item in props:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            problems.append("a property entry is not a (name, value) pair")
            continue
        why = property_problem(item[0], item[1])
        if why:
            problems.append(why)
        else:
            ok_props.append((item[0], item[1]))
    return ok_tags, ok_props, problems
