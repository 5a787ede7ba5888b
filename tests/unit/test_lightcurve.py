"""The light-curve table filters receive is the devkit's table, only cheaper to use.

``broker.lightcurve`` builds ``locus.timeseries()`` column-wise, iterates columns
at ndarray speed, carries the time column's computed representations across
copies and skips ``to_pandas``'s up-front copy. Each of those is held here to
what astropy and the devkit produce on real loci: same columns, dtypes, values,
masks, data under the mask, element types, DataFrames.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from astropy.table import Column, MaskedColumn
from astropy.timeseries import TimeSeries

from broker.filtering.devkit import devkit_dict, locus_from_devkit
from broker.lightcurve import LightCurveColumn, LightCurveMaskedColumn, LightCurveTable, build_table
from broker.locus import mjd_to_datetime
from broker.ops.samples import devkit_locus

devkit_models = pytest.importorskip("antares_devkit.models")


def _ztf_pipeline_loci():
    from tests.unit.test_filter_devkit_compat import _pipeline_loci

    return _pipeline_loci()


@pytest.fixture(scope="module")
def real_loci(shared_data):
    """Our loci for the devkit's two real loci and a dozen our pipeline builds from ../shared/data."""
    out = [locus_from_devkit(copy.deepcopy(devkit_locus(n))) for n in ("large_locus", "small_locus")]
    built = _ztf_pipeline_loci()
    assert len(built) > 10, "expected loci from the shared ZTF packets"
    out += sorted(built, key=lambda x: -len(x.alerts))[:12]
    return out


def _reference(alerts) -> TimeSeries:
    """What the devkit builds: astropy's list-of-dicts path."""
    return TimeSeries(data=[{"alert_id": a.id, **a.properties} for a in alerts],
                      time=[mjd_to_datetime(a.mjd) for a in alerts])


def assert_same_table(ref, new) -> None:
    assert ref.colnames == new.colnames
    assert len(ref) == len(new)
    assert np.array_equal(ref["time"].jd1, new["time"].jd1) and np.array_equal(ref["time"].jd2, new["time"].jd2)
    assert ref["time"].format == new["time"].format and ref["time"].scale == new["time"].scale
    for name in ref.colnames[1:]:
        a, b = ref[name], new[name]
        assert isinstance(b, MaskedColumn) == isinstance(a, MaskedColumn), name
        assert isinstance(b, Column) and a.dtype == b.dtype, (name, a.dtype, b.dtype)
        da, db = np.ma.getdata(a).view(np.ndarray), np.ma.getdata(b).view(np.ndarray)
        assert np.array_equal(da, db, equal_nan=a.dtype.kind == "f"), name
        if isinstance(a, MaskedColumn):
            assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b)), name
            assert str(a.fill_value) == str(b.fill_value), name


def test_build_table_equals_astropys_list_of_dicts_build(real_loci):
    for locus in real_loci:
        alerts = locus.alerts
        new = build_table([a.id for a in alerts], [a.properties for a in alerts],
                          [mjd_to_datetime(a.mjd) for a in alerts])
        assert isinstance(new, LightCurveTable)
        assert_same_table(_reference(alerts), new)


def test_build_table_handles_odd_values_as_astropy_does():
    """None, mixed int/float, bools, bytes and nested values: astropy's own converter decides."""
    ids = ["a1", "a2", "a3"]
    props = [
        {"x": 1, "s": "t", "n": None, "b": True, "mix": 1, "raw": b"ab", "lst": [1, 2]},
        {"x": 2.5, "b": False, "mix": "k", "raw": b"c", "lst": [3, 4], "late": 7},
        {"x": 3, "s": "f", "n": 4.0, "b": True, "mix": 2.0, "raw": b"", "lst": [5, 6]},
    ]
    times = [mjd_to_datetime(m) for m in (59000.0, 59001.0, 59002.5)]
    ref = TimeSeries(data=[{"alert_id": i, **p} for i, p in zip(ids, props, strict=True)], time=times)
    new = build_table(ids, props, times)
    assert_same_table(ref, new)
    assert isinstance(new["late"], LightCurveMaskedColumn) and new["late"].mask.tolist() == [True, False, True]


def test_timeseries_equals_the_devkits_including_corrections_and_pandas():
    for name in ("large_locus", "small_locus"):
        d = devkit_locus(name)
        ours = locus_from_devkit(copy.deepcopy(d))
        theirs = devkit_models.DevKitLocus(**copy.deepcopy(d)) if name == "large_locus" else None
        if theirs is None:  # the small locus's grav-wave list needs the compat test's adapter
            from tests.unit.test_filter_devkit_compat import _devkit_locus

            theirs = _devkit_locus(d)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = theirs.timeseries("ztf")
            new = ours.timeseries("ztf")
            assert_same_table(ref, new)
            for col in ("ant_mag_corrected", "ant_magerr_corrected", "ant_magulim_corrected", "ant_magllim_corrected"):
                assert np.array_equal(np.ma.filled(ref[col], np.nan), np.ma.filled(new[col], np.nan), equal_nan=True)
            frame = new.to_pandas()
            # the same frame, as a DataFrame subclass that keeps pandas 2's positional ``series[-1]``
            assert isinstance(frame, pd.DataFrame) and isinstance(frame["ant_mag"], pd.Series)
            pd.testing.assert_frame_equal(ref.to_pandas(), pd.DataFrame(frame), check_exact=True)
            assert frame["ant_mag"][-1] == frame["ant_mag"].iloc[-1] and frame["ant_mjd"][0] == frame["ant_mjd"].iloc[0]
            assert_same_table(theirs.timeseries("all"), ours.timeseries("all"))
            assert list(theirs.lightcurve().colnames) == list(ours.lightcurve().colnames)
            assert type(theirs.lightcurve()) is type(ours.lightcurve())  # a QTable: no time column
            pd.testing.assert_frame_equal(theirs.lightcurve().to_pandas(), ours.lightcurve().to_pandas(),
                                          check_exact=True)
            with pytest.raises(ValueError):
                theirs.timeseries("lsst")
            with pytest.raises(ValueError):
                ours.timeseries("lsst")


def _elements(col):
    return [(type(v), v) for v in col]


def test_iteration_yields_exactly_astropys_elements(real_loci):
    ts = real_loci[0].timeseries("ztf")
    checked = masked_seen = 0
    for name in ts.colnames[1:]:
        fast = ts[name]
        assert isinstance(fast, (LightCurveColumn, LightCurveMaskedColumn))
        slow = MaskedColumn(fast, copy=True) if isinstance(fast, MaskedColumn) else Column(fast, copy=True)
        assert type(slow) in (Column, MaskedColumn)
        got, want = _elements(fast), _elements(slow)
        assert [t for t, _ in got] == [t for t, _ in want], name
        for (_, g), (_, w) in zip(got, want, strict=True):
            if w is np.ma.masked:
                masked_seen += 1
                assert g is np.ma.masked
            elif isinstance(w, float) and w != w:
                assert g != g
            else:
                assert g == w
        checked += 1
    assert checked > 50 and masked_seen > 1000
    # derived columns keep the class (the filters' ``np.abs(t - col)`` loops)
    mjd = ts["ant_mjd"]
    assert isinstance(np.abs(mjd - 1.0), LightCurveColumn)
    assert isinstance(ts[ts["ant_survey"] == 1]["ztf_magpsf"], LightCurveMaskedColumn)
    assert min(np.abs(mjd - mjd[3])) == 0.0 and type(min(mjd)) is np.float64


def test_iteration_of_bytes_and_2d_columns_keeps_astropys_path():
    raw = LightCurveColumn(np.array([b"ab", b"c"]))
    assert list(raw) == ["ab", "c"]  # astropy decodes bytes elements to str
    grid = LightCurveColumn(np.arange(6).reshape(3, 2))
    assert [r.tolist() for r in grid] == [[0, 1], [2, 3], [4, 5]]
    m = LightCurveMaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False])
    assert [type(v) for v in m] == [type(v) for v in MaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False])]
    assert list(m)[1] is np.ma.masked


def test_copies_are_independent_and_keep_cached_times(real_loci):
    locus = real_loci[0]
    a = locus.timeseries("ztf")
    b = locus.timeseries("ztf")
    assert a["time"].cache["format"], "the build computes datetime64 once"
    a["time"].datetime64[0] = np.datetime64("1999-01-01")  # a filter scribbling on its copy's cached values
    a["ant_mag"][0] = -99.0
    assert b["time"].datetime64[0] != np.datetime64("1999-01-01")
    assert locus.timeseries("ztf")["ant_mag"][0] != -99.0
    df = b.to_pandas()
    df.iloc[0, df.columns.get_loc("ant_mag")] = -42.0  # the frame is a copy, as astropy's is
    assert b["ant_mag"][0] != -42.0
    assert df.index.name == "time" and str(df.index.dtype).startswith("datetime64")
    ref = TimeSeries(b, copy=True)
    pd.testing.assert_frame_equal(TimeSeries.to_pandas(ref), pd.DataFrame(b.to_pandas()), check_exact=True)


def test_pipeline_loci_timeseries_match_the_devkit(real_loci):
    from tests.unit.test_filter_devkit_compat import _devkit_locus

    for locus in real_loci[2:]:
        theirs = _devkit_locus(devkit_dict(locus))
        ours = locus_from_devkit(devkit_dict(locus))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_same_table(theirs.timeseries("ztf"), ours.timeseries("ztf"))
            pd.testing.assert_frame_equal(theirs.timeseries("ztf").to_pandas(), pd.DataFrame(ours.timeseries("ztf").to_pandas()),
                                          check_exact=True)


def test_to_pandas_reuses_one_frame_only_while_the_table_is_unchanged(real_loci):
    """The shared frame is handed out only to unchanged copies; any change is converted afresh."""
    from broker.lightcurve import same_content

    locus = locus_from_devkit(copy.deepcopy(devkit_locus("large_locus")))
    first = locus.timeseries("ztf")
    source = first.pristine_source
    assert source is not None and same_content(first, source)
    f1 = first.to_pandas()
    assert source._frame is not None
    f2 = locus.timeseries("ztf").to_pandas()
    pd.testing.assert_frame_equal(f1, f2, check_exact=True)
    f2.iloc[0, 0] = "scribbled"  # one filter's frame is its own
    assert locus.timeseries("ztf").to_pandas().iloc[0, 0] != "scribbled"

    changes = [
        lambda t: t["ant_mag"].__setitem__(0, t["ant_mag"][0] + 1.0),
        lambda t: t.add_column(np.arange(len(t)), name="extra"),
        lambda t: t.remove_column("ant_mag"),
        lambda t: t["ztf_magpsf"].mask.__setitem__(-1, not t["ztf_magpsf"].mask[-1]),
        lambda t: t.__setitem__("time", t["time"] + 1.0 * __import__("astropy.units").units.s),
    ]
    # slices and column selections (what filters usually do before converting) convert like astropy's
    dets = locus.timeseries("ztf")[locus.timeseries("ztf")["ant_survey"] == 1]
    assert isinstance(dets, LightCurveTable) and dets.pristine_source is None
    pd.testing.assert_frame_equal(TimeSeries.to_pandas(TimeSeries(dets, copy=True)), pd.DataFrame(dets.to_pandas()),
                                  check_exact=True)
    for change in changes:
        mine = locus.timeseries("ztf")
        change(mine)
        assert not same_content(mine, source)
        ref = TimeSeries.to_pandas(TimeSeries(mine, copy=True))
        pd.testing.assert_frame_equal(ref, pd.DataFrame(mine.to_pandas()), check_exact=True)
        assert not ref.equals(f1)


def test_copy_is_what_astropys_copy_makes(real_loci):
    ts = real_loci[0].timeseries("ztf")
    ts.meta["note"] = {"nested": [1]}
    mine, theirs = ts.copy(), TimeSeries.copy(ts)
    assert type(mine) is type(theirs) is LightCurveTable
    assert_same_table(theirs, mine)
    for name in mine.colnames:
        a, b = mine[name], theirs[name]
        assert type(a) is type(b), name
        if name != "time":
            assert (a.name, a.unit, a.format, a.description, dict(a.meta)) == (b.name, b.unit, b.format, b.description,
                                                                              dict(b.meta))
            assert a.info.indices == b.info.indices == []
            assert not np.shares_memory(np.ma.getdata(a), np.ma.getdata(ts[name]))
        assert a.info.parent_table is mine
    assert mine.meta == theirs.meta and mine.meta["note"] is not ts.meta["note"]
    ts.add_index("alert_id")  # tables with indices take astropy's own path
    indexed = ts.copy()
    assert len(indexed.indices) == len(ts.indices) >= 1
    assert [c.info.name for c in indexed.indices[0].columns] == [c.info.name for c in ts.indices[0].columns]


def test_a_single_use_locus_hands_out_its_first_build_and_still_protects_later_calls(real_loci):
    """A sandbox child's locus serves one filter call: its first table is not copied, but it is
    the same table, and a second call still gets one the first caller cannot reach."""
    shared = locus_from_devkit(copy.deepcopy(devkit_locus("large_locus")))
    single = locus_from_devkit(copy.deepcopy(devkit_locus("large_locus")))
    single._single_use = True
    first = single.timeseries("ztf")
    assert first.pristine_source is None  # the build itself, not a copy of a kept one
    assert_same_table(shared.timeseries("ztf"), first)
    first["ant_mag"][0] = -99.0
    first["time"].datetime64[0] = np.datetime64("1999-01-01")
    second = single.timeseries("ztf")
    assert second.pristine_source is not None and second["ant_mag"][0] != -99.0
    assert second["time"].datetime64[0] != np.datetime64("1999-01-01")
    assert_same_table(shared.timeseries("ztf"), second)
    assert_same_table(shared.timeseries("all"), single.timeseries("all"))
