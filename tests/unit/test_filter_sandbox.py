"""Hostile filters are contained: each is stopped and reported with a clear message; the stream goes on."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from broker.filtering import wire
from broker.filtering.contract import code_hash
from broker.filtering.devkit import locus_from_devkit
from broker.filtering.platform import loaded_from_spec
from broker.filtering.runner import ErrorPolicy
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool
from broker.ops.samples import devkit_locus

TEMPLATE = '''from antares_devkit.models import BaseFilter
{imports}

class {cls}(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{{"name": "{tag}", "description": "test"}}]

    def _run(self, locus):
{body}
'''


def filter_code(cls: str, body: str, imports: str = "", tag: str = "t") -> str:
    return TEMPLATE.format(cls=cls, body=body, imports=imports, tag=tag)


FORBIDDEN = "/work/main/albireo-sandbox-escape.txt" if Path("/work/main").is_dir() else "/tmp/../root/escape.txt"

#: name → (code, expected exception type, words the message must contain)
HOSTILE = {
    "Raiser": (filter_code("Raiser", "        raise ValueError('boom on purpose')"), "ValueError", "boom on purpose"),
    "Looper": (filter_code("Looper", "        while True:\n            pass"), "FilterTimeout", "time budget"),
    "CLooper": (filter_code("CLooper", "        import time\n        time.sleep(3600)"), "FilterTimeout",
                "time budget"),
    "Hog": (filter_code("Hog", "        x = np.ones(10 * 1024**3 // 8)\n        locus.tag(str(x.sum()))",
                        "import numpy as np"), "MemoryError", "10.0 GiB"),
    "Netter": (filter_code("Netter", "        s = socket.socket()\n        s.connect(('1.1.1.1', 80))",
                           "import socket"), "SandboxViolation", "network"),
    "Writer": (filter_code("Writer", f"        open({FORBIDDEN!r}, 'w').write('x')"), "SandboxViolation",
               "may not write"),
    "Exiter": (filter_code("Exiter", "        os._exit(3)", "import os"), "FilterCrashed", "exited with code 3"),
    "Segv": (filter_code("Segv", "        ctypes.string_at(0)", "import ctypes"), "FilterCrashed", "SIGSEGV"),
}
GOOD = filter_code("Good", "        locus.tag('good')\n        locus.set_property('good_n', len(locus.alerts))",
                   tag="good")
TMP_WRITER = filter_code("TmpWriter", "        import tempfile\n        with tempfile.NamedTemporaryFile('w') as fh:\n"
                         "            fh.write('allowed')\n        locus.tag('wrote_tmp')", tag="wrote_tmp")


def spec(name: str, code: str, prio: int = 0):
    return loaded_from_spec(FilterSpec(name, code_hash(code)[:12], code, prio))


def _loci(n: int = 3):
    base = devkit_locus("small_locus")
    out = []
    for i in range(n):
        d = copy.deepcopy(base)
        d["id"] = f"{d['id']}-{i}"
        out.append(locus_from_devkit(d))
    return out


@pytest.fixture(scope="module")
def loci():
    return _loci()


def test_wire_roundtrip_keeps_everything_a_filter_reads(loci):
    x = loci[0]
    x.user_tags.add("earlier")
    x.user_properties["earlier_p"] = 1.5
    y = wire.decode_locus(wire.decode_trusted(wire.pack({"s": wire.encode_locus_static(x)})[4:])["s"],
                          wire.decode_trusted(wire.pack(wire.encode_locus_dynamic(x))[4:]))
    assert (y.locus_id, y.ra, y.dec, y.user_tags, y.catalog_objects) == (x.locus_id, x.ra, x.dec, x.user_tags,
                                                                         x.catalog_objects)
    assert [a.properties for a in y.alerts] == [a.properties for a in x.alerts]
    assert y.alert.grav_wave_events == x.alert.grav_wave_events
    assert y.properties == x.properties
    assert y.grav_wave_events == x.grav_wave_events
    x.user_tags.discard("earlier")
    x.user_properties.pop("earlier_p")


def test_a_decoded_alert_builds_its_properties_on_first_use_and_behaves_as_an_alert():
    import dataclasses

    from broker.alert import Alert

    x = locus_from_devkit(copy.deepcopy(devkit_locus("large_locus")))
    assert len(x.alerts) >= 3
    y = wire.decode_locus(wire.encode_locus_static(x), wire.encode_locus_dynamic(x))
    a, b = y.alerts[0], y.alerts[1]
    assert isinstance(a, Alert) and isinstance(a, wire.WireAlert)
    slot = Alert.__dict__["properties"]
    with pytest.raises(AttributeError):
        slot.__get__(b, Alert)  # not built: nobody asked
    props = a.properties
    assert props is a.properties and props == x.alerts[0].properties  # built once, then the same dict
    a.properties["note"] = 1
    assert a.properties["note"] == 1
    b.properties = {"replaced": True}
    assert b.properties == {"replaced": True}
    c = dataclasses.replace(y.alerts[2])
    assert c.alert_id == x.alerts[2].alert_id and c.properties == x.alerts[2].properties
    assert [(q.alert_id, q.mjd, q.mag, q.is_history) for q in y.alerts] == \
        [(q.alert_id, q.mjd, q.mag, q.is_history) for q in x.alerts]


def test_untrusted_frames_are_plain_data_with_bounded_lengths():
    import pickle

    import msgpack

    with pytest.raises(wire.WireError):
        wire.decode_untrusted(msgpack.packb(msgpack.ExtType(1, b"2020-01-01")))  # no extension types
    with pytest.raises(wire.WireError):
        wire.decode_untrusted(pickle.dumps({"t": "result"}))  # a pickle is not a frame
    with pytest.raises(TypeError):
        wire.pack_plain({"v": object()})  # what a child sends is plain data or nothing
    assert wire.decode_untrusted(msgpack.packb({"t": "result", "tags": ["a"]})) == {"t": "result", "tags": ["a"]}


def test_each_hostile_filter_is_contained_with_a_clear_message(loci):
    loci = _loci()
    filters = [spec("Good", GOOD, 0), spec("TmpWriter", TMP_WRITER, 1)]
    filters += [spec(name, code, i + 2) for i, (name, (code, _, _)) in enumerate(HOSTILE.items())]
    limits = SandboxLimits(timeout_s=1.0, grace_s=1.0, memory_mb=3072)
    with SandboxPool(filters, limits, ErrorPolicy(max_error_rate=0)) as pool:
        report = pool.run(loci)
        for name, (_, exc, words) in HOSTILE.items():
            errs = [e for e in report.errors if e.filter == name]
            assert len(errs) == len(loci), (name, [(e.exception, e.message) for e in errs])
            for e in errs:
                assert e.exception == exc, (name, e.exception, e.message)
                assert words in e.message, (name, e.message)
        # the well-behaved filters ran on every locus, after and between the crashes
        for x in loci:
            assert {"good", "wrote_tmp"} <= report.tags_by_locus[x.locus_id]
            assert x.user_properties["good_n"] == len(x.alerts)
            assert x.provenance["good"].filter == "Good"
        assert not os.path.exists(FORBIDDEN)
        by_name = {f.name: f for f in filters}
        assert by_name["Exiter"].stats.crashes == by_name["Segv"].stats.crashes == len(loci)
        assert pool.respawns >= 2 * (len(loci) - 1)  # a new process after each death, when work remains
        # and the pool keeps working afterwards
        again = pool.run([_loci(1)[0]])
        assert "good" in next(iter(again.tags_by_locus.values()))


def test_syntax_and_import_errors_are_load_errors_naming_the_cause(loci):
    loci = _loci()
    bad_syntax = spec("BadSyntax", "class X(:\n    pass\n")
    missing = spec("Missing", "import not_a_real_package_xyz\n" + filter_code("Missing", "        pass"))
    raising_import = spec("RaisesOnImport", "raise RuntimeError('at import')\n")
    good = spec("Good", GOOD, 5)
    with SandboxPool([bad_syntax, missing, raising_import, good], SandboxLimits(timeout_s=2)) as pool:
        errs = pool.load_errors
        assert "syntax error" in errs["BadSyntax"]["message"] and "line 1" in errs["BadSyntax"]["message"]
        assert errs["Missing"]["missing"] == "not_a_real_package_xyz"
        assert "missing dependency 'not_a_real_package_xyz'" in errs["Missing"]["message"]
        assert "RuntimeError: at import" in errs["RaisesOnImport"]["message"]
        assert not bad_syntax.enabled and bad_syntax.disabled_reason.startswith("failed to load")
        report = pool.run(loci)
    assert all("good" in report.tags_by_locus[x.locus_id] for x in loci)
    assert not report.errors


def test_a_filter_failing_most_runs_is_disabled_by_rate_and_notified():
    loci = _loci(6)
    disabled = []
    policy = ErrorPolicy(max_error_rate=0.5, window_runs=4, min_runs=4,
                         on_disable=lambda f, e: disabled.append((f.name, e)))
    raiser = spec("Raiser", HOSTILE["Raiser"][0])
    with SandboxPool([raiser, spec("Good", GOOD, 1)], SandboxLimits(timeout_s=2), policy) as pool:
        report = pool.run(loci)
        assert not raiser.enabled
        assert "failed 4 of its last 4 runs" in raiser.disabled_reason
        assert [d[0] for d in disabled] == ["Raiser"]
        assert raiser.stats.errors == raiser.stats.runs == 4  # results after the disable are not counted
        again = pool.run(_loci(2))  # disabled: no longer runs, the others do
    assert not [e for e in again.errors if e.filter == "Raiser"]
    assert all("good" in t for t in report.tags_by_locus.values())


def test_loci_through_the_shared_memory_the_socket_or_both_give_the_same_results():
    """Loci go to every child through sealed shared memory; without it (0 MiB), or past it, by socket."""
    from broker.filtering.sandbox import SharedLoci

    counter = filter_code("Counter", "        locus.set_property('n', len(locus.alerts))\n"
                          "        locus.set_property('mags', float(sum(a.mag or 0.0 for a in locus.alerts)))\n"
                          "        locus.set_property('first', str(locus.alerts[0].properties.get('ant_passband')))\n"
                          "        locus.tag('counted')", tag="counted")
    big = devkit_locus("large_locus")
    big_frame = len(wire.encode_locus_static(locus_from_devkit(copy.deepcopy(big))))
    assert big_frame > 1 << 20  # past a 1 MiB shared memory: that locus goes by socket

    results, used = {}, {}
    for mb in (128, 0, 1):
        loci = [locus_from_devkit(copy.deepcopy(big)), *_loci(3)]
        with SandboxPool([spec("Counter", counter)], SandboxLimits(shared_mb=mb)) as pool:
            assert (pool.shared is None) == (mb == 0)
            report = pool.run(loci)
            used[mb] = pool.shared.used if isinstance(pool.shared, SharedLoci) else None
        assert not report.errors, [(e.exception, e.message) for e in report.errors]
        results[mb] = [(x.locus_id, x.user_properties.get("n"), x.user_properties.get("mags"),
                        x.user_properties.get("first"), sorted(x.user_tags)) for x in loci]
    assert all(n == len(x.alerts) > 0 for (_, n, *_), x in zip(results[0], loci, strict=True))
    assert results[128] == results[0] == results[1]
    assert used[128] >= big_frame  # all four in the shared memory
    assert 0 < used[1] < big_frame  # the three small ones shared, the large one sent by socket
