"""The plain-text circular of one revision, in the style of GCN Circulars.

Fixed layout (a golden file pins it, ``tests/data/mm_circular.golden.txt``): a header block
(``TITLE:``, ``NUMBER:``, ``SUBJECT:``, ``DATE:``, ``FROM:``), a paragraph on the event, its
localization with the 90 % error and area, a fixed-width candidates table, and references.
Lines stay within 80 columns, as circulars do.
"""

from __future__ import annotations

import textwrap
from typing import Any

from broker.multimessenger.notice import GW
from broker.multimessenger.outgoing.candidates import Candidate

WIDTH = 80


def _clean(x: Any, limit: int = 60) -> str:
    """One line of printable text: a notice's names are hostile input and must not forge header lines."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(x)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render_circular(event: dict[str, Any], candidates: list[Candidate], record_number: int,
                    alert_datetime: str) -> str:
    from broker.multimessenger.outgoing.build import alert_type, localization90
    from broker.multimessenger.outgoing.voevent import ivorn

    eid = _clean(event["event_id"])
    name = _clean(event.get("name") or eid)
    what = "gravitational-wave" if event.get("messenger") == GW else "neutrino"
    kind = alert_type(event, record_number)
    subject = (f"{name}: retraction of the Albireo optical candidates" if kind == "retraction"
               else f"{name}: {len(candidates)} optical candidate(s) in the {what} region")
    out = [f"TITLE:   GCN CIRCULAR (Albireo alert broker, revision {record_number})",
           f"NUMBER:  {eid}-{record_number}", f"SUBJECT: {subject}", f"DATE:    {alert_datetime}",
           "FROM:    Albireo alert broker <albireo.broker>", ""]
    meta = event.get("metadata") or {}
    body = (f"The {_clean(event.get('mission') or 'reporting')} {what} event {name} (id {eid}) occurred at "
            f"{_clean(event.get('event_time'))}.")
    stats = [f"FAR {meta['far']:.3g} Hz"] if isinstance(meta.get("far"), int | float) else []
    if isinstance(meta.get("p_astro"), int | float):
        stats.append(f"signalness {meta['p_astro']:.3f}")
    if isinstance(meta.get("nu_energy"), int | float):
        stats.append(f"most probable energy {meta['nu_energy']:.1f} TeV")
    if stats:
        body += " It was reported with " + ", ".join(stats) + "."
    out += textwrap.wrap(body, WIDTH) + [""]
    if kind == "retraction":
        out += textwrap.wrap(f"The event was retracted by its notice of {event.get('created')}. The optical "
                             "candidates reported by Albireo for it in earlier revisions are withdrawn.", WIDTH)
        out.append("")
    else:
        loc = localization90(event)
        if loc is None or loc.ra is None:
            out += ["Localization: none was given.", ""]
        else:
            if isinstance(loc.error, list):
                err = f"an ellipse of semi-axes {loc.error[0]:.2f} x {loc.error[1]:.2f} deg (PA {loc.error[2]:.1f} deg)"
            else:
                err = f"a radius of {_fmt(loc.error, '.2f')} deg"
            sys = "including" if loc.systematic_included else "statistical only, excluding"
            out += textwrap.wrap(
                f"Localization ({loc.shape}): RA, Dec = {loc.ra:.2f}, {loc.dec:+.2f} deg (ICRS), "
                f"{loc.containment * 100:.0f}% error {err} ({sys} systematics); 90% credible area "
                f"{_fmt(loc.area90, '.2f')} sq. deg.", WIDTH)
            out.append("")
        out += textwrap.wrap(f"Albireo found {len(candidates)} optical candidate(s) with alerts inside the "
                             f"90% region and the event's time window:", WIDTH)
        out.append("")
        header = f"{'Candidate':<20} {'RA (deg)':>10} {'Dec (deg)':>10} {'CL (%)':>7} {'Filter':>6} {'Mag':>6}"
        out += [header, "-" * len(header)]
        for c in candidates:
            det = [p for p in c.photometry if p.mag is not None]
            last = det[-1] if det else None
            out.append(f"{c.name:<20} {c.ra:>10.5f} {c.dec:>+10.5f} {c.contour_level:>7.1f} "
                       f"{(last.filter if last else '-'):>6} {(_fmt(last.mag if last else None, '.2f')):>6}")
        if not candidates:
            out.append("(none)")
        out.append("")
        out += textwrap.wrap("CL is the smallest credible level of the event's localization containing one of "
                             "the candidate's alerts; Mag is its latest detection (AB).", WIDTH)
        out.append("")
    out += ["References:",
            f"  Machine-readable notice: {ivorn(eid, record_number)}",
            f"  Event page: /events/{eid}"]
    if record_number > 1:
        out.append(f"  Supersedes: {ivorn(eid, record_number - 1)}")
    return "\n".join(out) + "\n"
