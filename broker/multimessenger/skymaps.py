"""Sky-map files → (UNIQ, PROBDENSITY) columns: multi-order maps as they are, flat maps converted.

LVK sends multi-order maps (``ORDERING = NUNIQ``; columns ``UNIQ``, ``PROBDENSITY`` per steradian);
IceCube and older LVK products are flat HEALPix images (``NSIDE``, ``ORDERING = NESTED|RING``, one
probability per pixel). Both become the multi-order form every later step works on. The bytes
are read with astropy (no temporary file); gzip is undone first. A map that is not a HEALPix
table, holds negative or non-finite values, or no probability at all raises
:class:`~broker.multimessenger.notice.NoticeError` (``bad_skymap``).
"""

from __future__ import annotations

import gzip
import io

import numpy as np

from broker.multimessenger.notice import NoticeError

#: the largest flat map we convert (nside 4096: 2e8 pixels would be 3 GB of columns).
MAX_FLAT_NSIDE = 2048


def read_skymap(data: bytes) -> tuple[np.ndarray, np.ndarray, dict]:
    """(uniq int64, probdensity float64 per sr, FITS header cards) of a HEALPix map file's bytes."""
    from astropy.io import fits

    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError as exc:
            raise NoticeError("bad_skymap", f"sky map: bad gzip ({exc})") from None
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdus:
            table = next((h for h in hdus[1:] if isinstance(h, fits.BinTableHDU)), None)
            if table is None:
                raise NoticeError("bad_skymap", "sky map: no binary table HDU")
            header = dict(table.header)
            cols = [c.upper() for c in table.columns.names]
            rows = table.data
            ordering = str(header.get("ORDERING", "")).upper()
            if "UNIQ" in cols:
                uniq = np.asarray(rows["UNIQ"], dtype=np.int64).ravel()
                name = "PROBDENSITY" if "PROBDENSITY" in cols else table.columns.names[cols.index("UNIQ") ^ 1]
                density = np.asarray(rows[name], dtype=np.float64).ravel()
            else:
                uniq, density = _flat(rows, table.columns.names, header, ordering)
    except NoticeError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, KeyError ... on corrupt files
        raise NoticeError("bad_skymap", f"sky map: not a readable FITS table ({type(exc).__name__}: {exc})") from None
    _check(uniq, density)
    return uniq, density, {k: v for k, v in header.items() if isinstance(v, (str, int, float, bool))}


def _flat(rows, names: list[str], header: dict, ordering: str) -> tuple[np.ndarray, np.ndarray]:
    import astropy_healpix as ah

    nside = int(header.get("NSIDE") or 0)
    prob = np.asarray(rows[names[0]], dtype=np.float64).ravel()
    if nside <= 0:
        nside = int(round(np.sqrt(prob.size / 12)))
    if nside > MAX_FLAT_NSIDE or 12 * nside * nside != prob.size:
        raise NoticeError("bad_skymap", f"flat sky map: {prob.size} pixels for NSIDE {nside} (max {MAX_FLAT_NSIDE})")
    order = int(np.log2(nside))
    if 2**order != nside:
        raise NoticeError("bad_skymap", f"flat sky map: NSIDE {nside} is not a power of 2")
    pix = np.arange(prob.size, dtype=np.int64)
    if ordering == "RING":
        # the value of nested pixel k is the ring value at nested_to_ring(k)
        prob = prob[ah.HEALPix(nside=nside, order="nested").nested_to_ring(pix)]
    elif ordering not in ("NESTED", "NEST"):
        raise NoticeError("bad_skymap", f"flat sky map: ORDERING {ordering!r} (expected NESTED or RING)")
    keep = prob > 0
    uniq = 4 * 4**order + pix[keep]
    density = prob[keep] / ah.nside_to_pixel_area(nside).to_value("sr")
    return uniq, density


def _check(uniq: np.ndarray, density: np.ndarray) -> None:
    if uniq.size == 0 or uniq.size != density.size:
        raise NoticeError("bad_skymap", "sky map: no pixels")
    if not np.all(np.isfinite(density)) or np.any(density < 0):
        raise NoticeError("bad_skymap", "sky map: probability densities must be finite and >= 0")
    if np.any(uniq < 4):
        raise NoticeError("bad_skymap", "sky map: UNIQ values below 4 are not HEALPix cells")
    if not np.any(density > 0):
        raise NoticeError("bad_skymap", "sky map: holds no probability")
