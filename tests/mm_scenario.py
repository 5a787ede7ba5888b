"""The multi-messenger acceptance scenario, shared by the embedded and the Kafka + Cassandra + Elasticsearch runs.

Real ZTF packets (``../shared/data/ztf``) are moved — position and time, ids rewritten, every
measured value kept (``loadgen.move_packet``) — to chosen places around two events:

* an LVK alert with LVK's real sample sky map (``MS181101ab-preliminary.json``, its event time set
  to the scenario's), and its retraction;
* an IceCube track alert (GCN's real example notice) as a 1° circle at 90 % containment, and its
  retraction (``alert_type: retraction``, the next ``record_number``).

Some packets land inside each 90 % region at the event's time, some just outside the region, some
inside it but days before the time window opens, the rest far away. What *should* be tagged is
decided independently of our code: ``ligo.skymap.postprocess.crossmatch`` on the same map, and
astropy's angular separation for the circle, applied to every alert of every moved packet inside
the time window. A devkit ``BaseFilter`` with ``REQUIRED_GRAV_WAVE_PROB_REGION = 90`` is registered
in the store's filter registry (it runs in the sandbox), and the devkit's own
``_satisfies_contraints`` decides where it should have run.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker.multimessenger.notice import from_mjd, iso

T_GW = 60205.25  # the scenario's event times (MJD): 2023-09-19
T_NU = 60205.75
NU_CENTER = (31.0, 21.0)
NU_RADIUS = 1.0
WINDOW = (1.0, 14.0)

FILTER_CODE = '''
from antares_devkit.models import BaseFilter


class GwCounterpart(BaseFilter):
    """Runs only on alerts inside some GW event's 90% region (the devkit's REQUIRED_GRAV_WAVE_PROB_REGION)."""

    REQUIRED_GRAV_WAVE_PROB_REGION = 90
    OUTPUT_LOCUS_TAGS = [{"name": "gw_counterpart_candidate", "description": "inside a GW 90% region"}]
    OUTPUT_LOCUS_PROPERTIES = [
        {"name": "gw_event", "type": "str", "description": "the GW event"},
        {"name": "gw_notice_type", "type": "str", "description": "its notice type, from the event metadata"},
        {"name": "gw_contour_level", "type": "float", "description": "the alert's smallest credible level"},
    ]

    def _run(self, locus):
        gw = min(locus.alert.grav_wave_events, key=lambda e: e["contour_level"])
        meta = locus.grav_wave_events_metadata[gw["gracedb_id"]]
        locus.set_property("gw_event", gw["gracedb_id"])
        locus.set_property("gw_notice_type", str(meta.notice_type))
        locus.set_property("gw_contour_level", float(gw["contour_level"]))
        locus.tag("gw_counterpart_candidate")
'''


@dataclass
class Scenario:
    packets: list[bytes]
    #: notices, in the order a test sends them
    gw_notice: bytes
    nu_notice: bytes
    gw_retraction: bytes
    nu_retraction: bytes
    #: object id of each moved packet → its category
    category: dict[str, str] = field(default_factory=dict)
    expected_gw: set[str] = field(default_factory=set)  # object ids that must end in_gw_90
    expected_nu: set[str] = field(default_factory=set)

    def notice_files(self, folder: Path, *, retractions: bool = False) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        items = [("gw.json", self.gw_notice), ("nu.json", self.nu_notice)]
        if retractions:
            items = [("gw-retraction.json", self.gw_retraction), ("nu-retraction.json", self.nu_retraction)]
        out = []
        for name, raw in items:
            (folder / name).write_bytes(raw)
            out.append(folder / name)
        return out


def _lvk_map(shared_data: Path):
    from astropy.table import Table

    from broker.multimessenger.localization import MultiOrderMap

    table = Table.read(shared_data / "lvk" / "bayestar.multiorder.fits")["UNIQ", "PROBDENSITY"]
    return table, MultiOrderMap(np.asarray(table["UNIQ"]), np.asarray(table["PROBDENSITY"]))


def _targets(loc, n_in: int, n_out: int, rng: np.random.Generator) -> tuple[list, list]:
    """Pixel centres of the map at credible levels 5–85 % (inside) and 93–99 % (just outside 90 %)."""
    import astropy_healpix as ah

    order, ipix = loc._order, loc._ipix
    level = np.empty(loc.uniq.size)
    level[loc._rank] = loc.cumprob * 100
    inside = np.flatnonzero((level > 5) & (level < 85))
    outside = np.flatnonzero((level > 93) & (level < 99))
    pick = [rng.choice(inside, n_in, replace=False), rng.choice(outside, n_out, replace=False)]
    out = []
    for idx in pick:
        lon, lat = ah.healpix_to_lonlat(ipix[idx], 2 ** order[idx], order="nested")
        out.append(list(zip(lon.deg.tolist(), lat.deg.tolist(), strict=True)))
    return out[0], out[1]


def _offset(center: tuple[float, float], dist_deg: float, pa_deg: float) -> tuple[float, float]:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    c = SkyCoord(center[0] * u.deg, center[1] * u.deg).directional_offset_by(pa_deg * u.deg, dist_deg * u.deg)
    return float(c.ra.deg), float(c.dec.deg)


def build(shared_data: Path, seed: int = 13) -> Scenario:
    from broker.ingest.decode import decode_message
    from broker.ingest.framing import DecodeError
    from broker.ops.loadgen import move_packet, read_packets

    rng = np.random.default_rng(seed)
    table, loc = _lvk_map(shared_data)
    gw_in, gw_out = _targets(loc, 8, 6, rng)
    plan: list[tuple[str, tuple[float, float], float]] = []  # category, target, trigger mjd
    plan += [("gw_in", p, T_GW + 1.0) for p in gw_in]
    plan += [("gw_out", p, T_GW + 1.0) for p in gw_out]
    # inside the region (20" from three of the others: other loci), before the window opens
    plan += [("gw_early", (p[0], p[1] + 0.0056), T_GW - 5.0) for p in gw_in[:3]]
    plan += [("nu_in", _offset(NU_CENTER, d, pa), T_NU + 2.0) for d, pa in zip(rng.uniform(0.05, 0.9, 6),
                                                                                rng.uniform(0, 360, 6), strict=True)]
    plan += [("nu_out", _offset(NU_CENTER, d, pa), T_NU + 2.0) for d, pa in zip(rng.uniform(1.1, 3.0, 6),
                                                                                 rng.uniform(0, 360, 6), strict=True)]
    raws = []
    for raw in read_packets([shared_data / "ztf"]):
        try:
            decode_message(raw)
        except DecodeError:
            continue  # the one deliberately unreadable packet
        raws.append(raw)
    while len(plan) < len(raws):  # the rest far from both events, in the window
        plan.append(("far", (float(rng.uniform(250, 300)), float(rng.uniform(40, 60))), T_GW + 2.0))
    packets, category = [], {}
    alerts_by_object: dict[str, list] = {}
    for i, (raw, (cat, (ra, dec), mjd)) in enumerate(zip(raws, plan, strict=False)):
        trig = decode_message(raw)[0].trigger
        moved = move_packet(raw, dra=ra - trig.ra, ddec=dec - trig.dec, dt_days=mjd - trig.mjd, index=1000 + i)
        p = decode_message(moved)[0]
        assert abs(p.trigger.ra - ra) < 1e-6 and abs(p.trigger.mjd - mjd) < 1e-6
        packets.append(moved)
        category[p.trigger.object_id] = cat
        alerts_by_object[p.trigger.object_id] = p.alerts
    sc = Scenario(packets, *_notices(shared_data), category=category)
    sc.expected_gw = _expected_gw(table, alerts_by_object)
    sc.expected_nu = _expected_nu(alerts_by_object)
    return sc


def _in_window(alerts, t0: float) -> list:
    return [a for a in alerts if t0 - WINDOW[0] <= a.mjd <= t0 + WINDOW[1]]


def _expected_gw(table, alerts_by_object) -> set[str]:
    """crossmatch (ligo.skymap) on every in-window alert: level ≤ 90 % ⇒ the object is tagged."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from ligo.skymap.postprocess import crossmatch

    out = set()
    for oid, alerts in alerts_by_object.items():
        pos = [(a.ra, a.dec) for a in _in_window(alerts, T_GW) if np.isfinite(a.ra)]
        if pos:
            r = crossmatch(table, SkyCoord([p[0] for p in pos] * u.deg, [p[1] for p in pos] * u.deg))
            if np.any(np.atleast_1d(r.searched_prob) <= 0.9):
                out.add(oid)
    return out


def _expected_nu(alerts_by_object) -> set[str]:
    """astropy's separation: within the 90 % radius of the circle (its given radius) ⇒ tagged."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    center = SkyCoord(NU_CENTER[0] * u.deg, NU_CENTER[1] * u.deg)
    out = set()
    for oid, alerts in alerts_by_object.items():
        pos = [(a.ra, a.dec) for a in _in_window(alerts, T_NU) if np.isfinite(a.ra)]
        if pos and np.any(SkyCoord([p[0] for p in pos] * u.deg, [p[1] for p in pos] * u.deg).separation(center).deg
                          <= NU_RADIUS):
            out.add(oid)
    return out


def _notices(shared_data: Path) -> tuple[bytes, bytes, bytes, bytes]:
    gw = json.loads((shared_data / "lvk" / "MS181101ab-preliminary.json").read_text())
    gw["event"]["time"] = iso(from_mjd(T_GW))
    gw["time_created"] = iso(from_mjd(T_GW + 0.01))
    gw_retraction = json.loads((shared_data / "lvk" / "MS181101ab-retraction.json").read_text())
    gw_retraction["time_created"] = iso(from_mjd(T_GW + 0.3))
    nu = json.loads((shared_data / "gcn" / "notices" / "icecube"
                     / "single_neutrino_alerts.gold_bronze_track_alerts.example.json").read_text())
    nu.pop("healpix_url")
    nu.update(ra=NU_CENTER[0], dec=NU_CENTER[1], ra_dec_error=NU_RADIUS, containment_probability=0.9,
              trigger_time=iso(from_mjd(T_NU)), alert_datetime=iso(from_mjd(T_NU + 0.001)))
    nu_retraction = copy.deepcopy(nu)
    nu_retraction.update(alert_type="retraction", record_number=2, alert_datetime=iso(from_mjd(T_NU + 0.5)))
    return tuple(json.dumps(x).encode() for x in (gw, nu, gw_retraction, nu_retraction))


def configure(cfg) -> None:
    """The scenario's [multimessenger] settings (LVK's sample is a mock superevent: accept test notices)."""
    mm = cfg.multimessenger
    mm.accept_test_notices = True
    mm.download_skymaps = False
    mm.gw_days_before, mm.gw_days_after = WINDOW
    mm.neutrino_days_before, mm.neutrino_days_after = WINDOW
    cfg.catalogs.enabled = False
    cfg.filters.builtin = []
    cfg.filters.refresh_s = 0.0


def tagged(store, tag: str) -> set[str]:
    """Object ids of the stored loci carrying ``tag``."""
    return {x.internal_properties.get("ztf_object_id") for b in store.iter_loci() for x in b if tag in x.user_tags}


def check_tags(sc: Scenario, store, *, retracted: bool = False) -> list[str]:
    """Every disagreement between the stored loci and the expectation, with its cause (empty: all agree)."""
    problems = []
    want = {"in_gw_90": set() if retracted else sc.expected_gw, "in_neutrino_90": set() if retracted else sc.expected_nu}
    for tag, expected in want.items():
        got = tagged(store, tag)
        for oid in sorted(got - expected):
            problems.append(f"{tag}: {oid} ({sc.category.get(oid)}) tagged but should not be")
        for oid in sorted(expected - got):
            problems.append(f"{tag}: {oid} ({sc.category.get(oid)}) not tagged")
    for b in store.iter_loci():
        for x in b:
            oid = x.internal_properties.get("ztf_object_id")
            gw_alerts = {aid for aid, evs in x.alert_grav_wave_events.items() if evs}
            if (oid in want["in_gw_90"]) != bool(gw_alerts) or (oid in want["in_gw_90"]) != ("MS181101ab" in
                                                                                               x.grav_wave_events):
                problems.append(f"{oid}: grav_wave_events {sorted(gw_alerts)} / metadata {x.grav_wave_events}")
            for a in x.alerts:
                for e in a.grav_wave_events:
                    if not (e["contour_level"] <= 90 and T_GW - WINDOW[0] <= a.mjd <= T_GW + WINDOW[1]):
                        problems.append(f"{oid}: alert {a.alert_id} carries {e} outside the region or window")
            if (oid in want["in_neutrino_90"]) != bool(x.neutrino_events):
                problems.append(f"{oid}: neutrino_events {x.neutrino_events}")
    return problems


def check_filter(store) -> list[str]:
    """The devkit's own check decides where the GW filter should have run; compare with where it did."""
    from antares_devkit.models import DevKitLocus

    from broker.filtering.contract import load_filter_module
    from broker.filtering.devkit import devkit_dict

    cls = load_filter_module(FILTER_CODE, "mm_scenario_filter").GwCounterpart
    probe = cls()
    problems, ran = [], 0
    for b in store.iter_loci():
        for x in b:
            should = probe._satisfies_contraints(DevKitLocus(**devkit_dict(x)))
            did = "gw_counterpart_candidate" in x.user_tags
            ran += did
            if should != did:
                problems.append(f"{x.locus_id}: devkit says run={should}, the filter ran={did}")
            if did and (x.user_properties.get("gw_event") != "MS181101ab"
                        or x.user_properties.get("gw_notice_type") != "PRELIMINARY"
                        or not x.user_properties.get("gw_contour_level", 100) <= 90):
                problems.append(f"{x.locus_id}: the filter did not see the event metadata: {x.user_properties}")
    if ran == 0:
        problems.append("the filter ran nowhere")
    return problems


def embedded_workdir(shared_data: Path, workdir: Path, *, extra_notices: bool = True) -> tuple[Scenario, object]:
    """The scenario ingested into a demo-shaped workdir (``albireo serve --workdir`` serves it).

    Notices first, then the packets; with ``extra_notices`` GCN's real example notices and the
    IceCube VOEvents of ``tests/data/notices`` too (older revisions of the scenario's neutrino, and
    events of every kind). LVK's real VOEvents are left out: their retraction of ``MS181101ab``
    would withdraw the scenario's event of that name (nothing revives a retracted event).
    """
    from broker.adapters.streams.files import write_stream_file
    from broker.assemble import embedded_notice_worker, embedded_worker, open_store
    from broker.cli.demo import demo_store_paths
    from broker.config import load_config
    from broker.filtering import registry

    sc = build(shared_data)
    cfg = load_config(env={})
    store_path, index_path = demo_store_paths(workdir)
    cfg.store.path, cfg.search.path = str(store_path), str(index_path)
    configure(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg)
    registry.add_revision(store, FILTER_CODE, "astronomer", approved_by="operator", enable=True)
    store.close()
    files = sc.notice_files(workdir / "notices")
    if extra_notices:
        files += sorted((shared_data / "gcn" / "notices").glob("*/*.example.json"))
        data = Path(__file__).resolve().parent / "data" / "notices"
        files += [data / "icecube_gold_track.xml", data / "icecube_gold_track_update.xml", data / "icecube_cascade.xml"]
    with embedded_notice_worker(cfg, files, workdir / "streams") as a:
        a.worker.run()
    path = workdir / "packets.avro-stream"
    write_stream_file(sc.packets, path)
    with embedded_worker(cfg, [path], workdir / "streams") as a:
        a.worker.run()
    return sc, cfg


@contextmanager
def serving(workdir: Path, home: Path):
    """``albireo serve --workdir`` in a subprocess on a free loopback port; yields its base URL."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, ALBIREO_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--port", "0", "--workdir", str(workdir)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.search(r"listening on (http://\S+)", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.poll() is not None else "serve printed no listening line"
        yield m.group(1).rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
