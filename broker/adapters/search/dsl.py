"""The Elasticsearch query DSL that antares-client users send, evaluated by the embedded (SQLite) index.

Why an evaluator instead of a translation to :class:`~broker.ports.LocusQuery`: ANTARES users write
``bool`` with ``should`` / ``must_not``, multi-value ``terms``, ``wildcard`` and ``query_string``,
which a conjunction of structured filters cannot express. Each clause compiles to one SQL
condition over the stored JSON document, so nesting costs nothing extra and the answer is the set
Elasticsearch returns for the same body on the same documents (``tests/contract`` runs both).

How values match, following the index mapping (``elasticsearch.MAPPING``): every field is matched
through ``json_each``, so a list field (``tags``, ``catalogs``, ``events``) matches when any element
does and a missing field matches nothing. A number matches a numeric value equal to it, or a
string spelling it (a keyword field in Elasticsearch turns ``5`` into ``"5"``); a string matches
the identical string, or — when it spells a number — an equal numeric value (a double field
parses it). ``range`` compares numbers only.

Supported: ``match_all``, ``match_none``, ``bool`` (``must``, ``filter``, ``should`` with
``minimum_should_match`` as an integer, ``must_not``), ``term``, ``terms``, ``match`` /
``match_phrase`` (as exact terms: every searchable field is a keyword or a number), ``ids``,
``exists``, ``range`` (``gt``/``gte``/``lt``/``lte``), ``prefix``, ``wildcard`` (``*``, ``?``, ``\\``
escapes, ``case_insensitive``), ``query_string`` in its simple form (``field:value``,
``field:pat*``, ``field:"a b"``, ``field:[lo TO hi]``, ``field:>=x``, ``AND``/``OR``/``NOT``,
parentheses, ``default_operator``) and ANTARES's ``sky_distance``. Anything else — and a body
deeper than :data:`MAX_DEPTH`, with more than :data:`MAX_CLAUSES` clauses or larger than
:data:`MAX_BYTES` — is a :class:`QueryError` that names what is refused; never "match everything".
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from broker.adapters.search.sky import cone_pixel_ranges, parse_sky_distance
from broker.jsonutil import dumps
from broker.ports import QueryError

#: deepest nesting of objects/lists in a body (the same bound the Elasticsearch adapter applies).
MAX_DEPTH = 32
#: most query clauses (and terms values) in one body: each becomes SQL the index evaluates per document.
MAX_CLAUSES = 1024
#: largest body, serialised.
MAX_BYTES = 64 * 1024
#: the pixel order of the ``pixel`` column (``query.PIXEL_ORDER``).
PIXEL_ORDER = 16

#: top-level document fields that are keywords (strings) in the Elasticsearch mapping.
KEYWORD_FIELDS = frozenset({"locus_id", "tags", "catalogs", "ztf_object_id", "lsst_dia_object_id",
                            "grav_wave_events", "neutrino_events", "events"})
#: top-level document fields that are numbers in the Elasticsearch mapping.
NUMERIC_FIELDS = frozenset({"ra", "dec", "num_alerts", "first_alert_mjd", "last_alert_mjd"})
_PROPERTY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
SUPPORTED = ("match_all, match_none, bool (must/filter/should/must_not), term, terms, match, match_phrase, ids, "
             "exists, range, prefix, wildcard, query_string (simple), sky_distance")


class _Compiler:
    """One body → one SQL condition and its parameters (the ``?`` placeholders, in order)."""

    def __init__(self) -> None:
        self.clauses = 0

    # -- fields --------------------------------------------------------------------------
    @staticmethod
    def field(path: Any) -> tuple[str, str]:
        """(JSON path for ``json_each``, kind: ``keyword``, ``number`` or ``property``) of a field name."""
        if not isinstance(path, str) or not path:
            raise QueryError(f"bad field name {path!r}")
        name = path.removesuffix(".keyword")
        if name.startswith("properties."):
            prop = name.removeprefix("properties.")
            if not _PROPERTY.match(prop):
                raise QueryError(f"bad property name {prop!r}: letters, digits, '_', '.', ':', '-' only")
            return f'$.properties."{prop}"', "property"
        if name in KEYWORD_FIELDS:
            return f"$.{name}", "keyword"
        if name in NUMERIC_FIELDS:
            return f"$.{name}", "number"
        raise QueryError(f"field {path!r} is not searchable: use properties.<name> or one of "
                         f"{', '.join(sorted(KEYWORD_FIELDS | NUMERIC_FIELDS))}")

    @staticmethod
    def _any(json_path: str, cond: str, args: list[Any]) -> tuple[str, list[Any]]:
        """True when some value at ``json_path`` (an element, for a list) satisfies ``cond`` on ``j``."""
        return f"EXISTS (SELECT 1 FROM json_each(docs.doc, ?) AS j WHERE {cond})", [json_path, *args]

    def _equals(self, path: str, value: Any, kind: str) -> tuple[str, list[Any]]:
        json_path, _ = self.field(path)
        if isinstance(value, bool):
            return self._any(json_path, "j.type = ?", ["true" if value else "false"])
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise QueryError(f"{kind} on {path!r}: {value!r} is not a finite number")
            spelled = str(value) if isinstance(value, int) or not value.is_integer() else str(int(value))
            return self._any(json_path, "((j.type IN ('integer', 'real') AND j.value = ?) OR "
                                        "(j.type = 'text' AND j.value IN (?, ?)))", [value, spelled, str(value)])
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return self._any(json_path, "((j.type = 'text' AND j.value = ?) OR "
                                            "(j.type IN ('integer', 'real') AND j.value = ?))", [value, number])
            return self._any(json_path, "j.type = 'text' AND j.value = ?", [value])
        raise QueryError(f"{kind} on {path!r}: expected a string, number or boolean, got {value!r}")

    def _pattern(self, path: str, pattern: Any, ci: bool, kind: str) -> tuple[str, list[Any]]:
        json_path, fkind = self.field(path)
        if fkind == "number":
            raise QueryError(f"{kind} on numeric field {path!r}: only keyword fields take patterns")
        if not isinstance(pattern, str) or len(pattern) > 1024:
            raise QueryError(f"{kind} on {path!r}: expected a pattern string (at most 1024 characters)")
        return self._any(json_path, "j.type = 'text' AND es_wildcard(j.value, ?, ?)", [pattern, int(bool(ci))])

    def _range(self, path: str, bounds: Any) -> tuple[str, list[Any]]:
        json_path, fkind = self.field(path)
        if fkind == "keyword":
            raise QueryError(f"range on keyword field {path!r} is not supported")
        if not isinstance(bounds, dict) or not bounds or not set(bounds) <= {"gte", "gt", "lte", "lt", "boost"}:
            raise QueryError(f"range on {path!r}: use gte/gt/lte/lt")
        conds, args = ["j.type IN ('integer', 'real')"], []
        for key, op in (("gte", ">="), ("gt", ">"), ("lte", "<="), ("lt", "<")):
            v = bounds.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise QueryError(f"range on {path!r}: {key} must be a finite number, got {v!r}")
            conds.append(f"j.value {op} ?")
            args.append(v)
        return self._any(json_path, " AND ".join(conds), args)

    # -- clauses -------------------------------------------------------------------------
    def clause(self, node: Any, depth: int) -> tuple[str, list[Any]]:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise QueryError(f"query has more than {MAX_CLAUSES} clauses")
        if depth > MAX_DEPTH:
            raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict) or len(node) != 1:
            raise QueryError(f"a query clause must be an object with one key, got {str(node)[:80]}")
        kind, body = next(iter(node.items()))
        if kind == "match_all":
            return "1", []
        if kind == "match_none":
            return "0", []
        if kind == "bool":
            return self._bool(body, depth)
        if kind == "sky_distance":
            ra, dec, radius = parse_sky_distance(body)
            ranges = cone_pixel_ranges(ra, dec, radius, PIXEL_ORDER)
            pix = " OR ".join("pixel BETWEEN ? AND ?" for _ in ranges) or "0"
            return f"(({pix}) AND ang_dist(ra, dec, ?, ?) <= ?)", [*(b for r in ranges for b in r), ra, dec, radius]
        if kind == "ids":
            values = body.get("values") if isinstance(body, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values) \
                    or len(values) > MAX_CLAUSES:
                raise QueryError("ids needs {'values': [locus id, ...]}")
            return (f"locus_id IN ({', '.join('?' for _ in values)})" if values else "0"), list(values)
        if kind == "exists":
            if not isinstance(body, dict) or set(body) != {"field"}:
                raise QueryError("exists needs {'field': name}")
            json_path, _ = self.field(body["field"])
            return self._any(json_path, "j.type != 'null'", [])
        if kind == "query_string":
            return self._query_string(body, depth)
        if kind not in ("term", "match", "match_phrase", "terms", "range", "wildcard", "prefix"):
            raise QueryError(f"query clause {kind!r} is not supported by the embedded index (supported: "
                             f"{SUPPORTED}); the Elasticsearch backend (search.backend = 'elasticsearch') runs "
                             "the full DSL")
        path, value = self._one_field(kind, body)
        if kind in ("term", "match", "match_phrase"):
            if isinstance(value, dict):
                extra = set(value) - {"value", "query", "boost", "case_insensitive"}
                if extra or value.get("case_insensitive"):
                    raise QueryError(f"{kind} on {path!r}: unsupported option(s) "
                                     f"{sorted(extra) or ['case_insensitive']}")
                value = value.get("value", value.get("query"))
            return self._equals(path, value, kind)
        if kind == "terms":
            if not isinstance(value, list) or len(value) > MAX_CLAUSES:
                raise QueryError(f"terms on {path!r}: expected a list of at most {MAX_CLAUSES} values")
            if not value:
                return "0", []
            self.clauses += len(value)
            if self.clauses > MAX_CLAUSES:
                raise QueryError(f"query has more than {MAX_CLAUSES} clauses and terms values")
            parts = [self._equals(path, v, kind) for v in value]
            return "(" + " OR ".join(p for p, _ in parts) + ")", [a for _, args in parts for a in args]
        if kind == "range":
            return self._range(path, value)
        # wildcard or prefix
        ci = False
        if isinstance(value, dict):
            extra = set(value) - {"value", "wildcard", "boost", "case_insensitive", "rewrite"}
            if extra:
                raise QueryError(f"{kind} on {path!r}: unsupported option(s) {sorted(extra)}")
            ci = bool(value.get("case_insensitive", False))
            value = value.get("value", value.get("wildcard"))
        if kind == "prefix":
            if not isinstance(value, str):
                raise QueryError(f"prefix on {path!r}: expected a string")
            value = re.sub(r"([*?\\])", r"\\\1", value) + "*"
        return self._pattern(path, value, ci, kind)

    @staticmethod
    def _one_field(kind: str, body: Any) -> tuple[str, Any]:
        if not isinstance(body, dict):
            raise QueryError(f"{kind} must be an object naming one field")
        fields = [k for k in body if k not in ("boost", "_name")]
        if len(fields) != 1:
            raise QueryError(f"{kind} must name exactly one field, got {sorted(body)}")
        return fields[0], body[fields[0]]

    def _bool(self, body: Any, depth: int) -> tuple[str, list[Any]]:
        if not isinstance(body, dict):
            raise QueryError("bool must be an object")
        extra = set(body) - {"must", "filter", "should", "must_not", "minimum_should_match", "boost", "_name"}
        if extra:
            raise QueryError(f"bool.{sorted(extra)[0]} is not supported")
        parts: list[str] = []
        args: list[Any] = []

        def subs(key: str) -> list[tuple[str, list[Any]]]:
            value = body.get(key, [])
            items = value if isinstance(value, list) else [value]
            return [self.clause(x, depth + 1) for x in items]

        for key in ("must", "filter"):
            for sql, a in subs(key):
                parts.append(sql)
                args += a
        for sql, a in subs("must_not"):
            parts.append(f"NOT ({sql})")
            args += a
        should = subs("should")
        msm = body.get("minimum_should_match")
        if msm is None:
            msm = 0 if ("must" in body or "filter" in body) else 1
        if isinstance(msm, str) and re.fullmatch(r"-?\d+", msm):
            msm = int(msm)
        if isinstance(msm, bool) or not isinstance(msm, int):
            raise QueryError(f"bool.minimum_should_match {msm!r}: only an integer is supported")
        if msm < 0:
            msm = max(len(should) + msm, 0)
        if should and msm > 0:
            if msm > len(should):
                return "0", []
            count = " + ".join(f"(CASE WHEN {sql} THEN 1 ELSE 0 END)" for sql, _ in should)
            parts.append(f"({count}) >= ?")
            for _, a in should:
                args += a
            args.append(msm)
        return ("(" + " AND ".join(parts) + ")" if parts else "1"), args

    # -- query_string ----------------------------------------------------------------------
    _TOKEN = re.compile(r'\s*(?:(\()|(\))|(AND\b|&&)|(OR\b|\|\|)|(NOT\b|!)|'
                        r'([A-Za-z0-9_][A-Za-z0-9_.:\-]*?):\s*'
                        r'(?:"((?:[^"\\]|\\.)*)"|([\[{])\s*(\S+)\s+TO\s+(\S+?)\s*([\]}])|(>=|<=|>|<)\s*([^\s()]+)|'
                        r'((?:[^\s()"\\]|\\.)+)))')

    def _query_string(self, body: Any, depth: int) -> tuple[str, list[Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise QueryError("query_string needs {'query': '...'}")
        extra = set(body) - {"query", "default_operator", "boost", "analyze_wildcard"}
        if extra:
            raise QueryError(f"query_string: option(s) {sorted(extra)} are not supported (every term must name "
                             "its field, e.g. tags:high_snr)")
        op = str(body.get("default_operator", "OR")).upper()
        if op not in ("AND", "OR"):
            raise QueryError(f"query_string default_operator {op!r}: AND or OR")
        text = body["query"]
        if len(text) > 4096:
            raise QueryError("query_string longer than 4096 characters")
        tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = self._TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise QueryError(f"query_string: cannot parse {text[pos:pos + 40]!r} (simple syntax only: "
                                 "field:value, field:pat*, field:\"a b\", field:[lo TO hi], field:>x, AND, OR, NOT, ())")
            pos = m.end()
            g = m.groups()
            if g[0]:
                tokens.append(("(", None))
            elif g[1]:
                tokens.append((")", None))
            elif g[2]:
                tokens.append(("AND", None))
            elif g[3]:
                tokens.append(("OR", None))
            elif g[4]:
                tokens.append(("NOT", None))
            else:
                tokens.append(("TERM", self._qs_term(g)))
        return _QSParser(tokens, op, self, depth).parse()

    def _qs_term(self, g: tuple[Any, ...]) -> dict[str, Any]:
        fieldname = g[5]
        if g[6] is not None:
            return {"term": {fieldname: re.sub(r"\\(.)", r"\1", g[6])}}
        if g[7] is not None:
            lo, hi = _qs_number(g[8]), _qs_number(g[9])
            bounds = {}
            if lo is not None:
                bounds["gte" if g[7] == "[" else "gt"] = lo
            if hi is not None:
                bounds["lte" if g[10] == "]" else "lt"] = hi
            return {"range": {fieldname: bounds}} if bounds else {"exists": {"field": fieldname}}
        if g[11] is not None:
            v = _qs_number(g[12])
            if v is None:
                raise QueryError(f"query_string: {fieldname}:{g[11]}{g[12]} needs a number")
            return {"range": {fieldname: {{">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}[g[11]]: v}}}
        raw = g[13]
        if raw == "*":
            return {"exists": {"field": fieldname}}
        if re.search(r"(?<!\\)[*?]", raw):
            return {"wildcard": {fieldname: raw}}
        # a bare value stays a string: _equals matches it against numbers too when it spells one
        return {"term": {fieldname: re.sub(r"\\(.)", r"\1", raw)}}


def _qs_number(text: str) -> float | int | None:
    if text == "*":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        raise QueryError(f"query_string: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise QueryError(f"query_string: {text!r} is not a finite number")
    return v


class _QSParser:
    """Recursive descent over query_string tokens: OR < AND < NOT < term/parentheses; juxtaposition = default_operator."""

    def __init__(self, tokens: list[tuple[str, Any]], default_op: str, compiler: _Compiler, depth: int):
        self.tokens, self.i, self.op, self.c, self.depth = tokens, 0, default_op, compiler, depth

    def parse(self) -> tuple[str, list[Any]]:
        if not self.tokens:
            raise QueryError("query_string is empty")
        sql = self._or()
        if self.i != len(self.tokens):
            raise QueryError("query_string: unbalanced parentheses")
        return sql

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def _join(self, parts: list[tuple[str, list[Any]]], op: str) -> tuple[str, list[Any]]:
        if len(parts) == 1:
            return parts[0]
        return "(" + f" {op} ".join(p for p, _ in parts) + ")", [a for _, args in parts for a in args]

    def _or(self) -> tuple[str, list[Any]]:
        parts = [self._and()]
        while self._peek() == "OR" or (self.op == "OR" and self._peek() in ("TERM", "(", "NOT")):
            if self._peek() == "OR":
                self.i += 1
            parts.append(self._and())
        return self._join(parts, "OR")

    def _and(self) -> tuple[str, list[Any]]:
        parts = [self._not()]
        while self._peek() == "AND" or (self.op == "AND" and self._peek() in ("TERM", "(", "NOT")):
            if self._peek() == "AND":
                self.i += 1
            parts.append(self._not())
        return self._join(parts, "AND")

    def _not(self) -> tuple[str, list[Any]]:
        if self._peek() == "NOT":
            self.i += 1
            sql, args = self._not()
            return f"NOT ({sql})", args
        return self._atom()

    def _atom(self) -> tuple[str, list[Any]]:
        kind = self._peek()
        if kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
            self.i += 1
            sql = self._or()
            if self._peek() != ")":
                raise QueryError("query_string: unbalanced parentheses")
            self.i += 1
            self.depth -= 1
            return sql
        if kind == "TERM":
            clause = self.tokens[self.i][1]
            self.i += 1
            return self.c.clause(clause, self.depth + 1)
        raise QueryError(f"query_string: unexpected {kind or 'end of query'}")


@lru_cache(maxsize=256)
def _wildcard_regex(pattern: str, ci: bool) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.S | (re.I if ci else 0))


def es_wildcard(value: Any, pattern: str, ci: int) -> int:
    """SQL function: Elasticsearch's ``wildcard`` on one keyword value (whole-value match)."""
    return int(isinstance(value, str) and _wildcard_regex(pattern, bool(ci)).fullmatch(value) is not None)


def compile_body(body: Any) -> tuple[str, list[Any]]:
    """An ``elasticsearch_query`` body (only a top-level ``query``) → (SQL condition on ``docs``, parameters)."""
    if not isinstance(body, dict) or set(body) != {"query"}:
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise QueryError(f"raw query body must be an object with only a top-level 'query' key (got {keys}); "
                         "size, sort and paging come from the request")
    _check_depth(body)  # first: a hostile nesting must not reach a recursive serialiser
    if len(dumps(body)) > MAX_BYTES:
        raise QueryError(f"raw query body larger than {MAX_BYTES} bytes")
    return _Compiler().clause(body["query"], 0)


def _check_depth(body: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` (iteratively: no recursion on hostile input)."""
    stack, seen = [(body, 0)], 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
        seen += 1
        if seen > 16 * MAX_CLAUSES:
            raise QueryError("query body has too many values")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
