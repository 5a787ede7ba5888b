"""FITS stamps → PNG, so a browser can show science, template and difference cutouts.

ZTF stamps are gzipped FITS (63×63); LSST stamps are plain FITS (or absent). The image is scaled
with IRAF's zscale (astropy's ``ZScaleInterval``), the display astronomers expect, then upscaled
by an integer factor with nearest-neighbour so pixels stay visible. NaN pixels (chip edges) are
drawn black. Rendering is cached per (alert, kind): stamps never change.
"""

from __future__ import annotations

import functools
import gzip
import io

import numpy as np

KINDS = ("science", "template", "difference")


class CutoutError(ValueError):
    """The bytes are not a FITS image we can render (the message names why)."""


def fits_image(data: bytes) -> np.ndarray:
    from astropy.io import fits

    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError as exc:
            raise CutoutError(f"corrupt gzip stream: {exc}") from None
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None and getattr(hdu.data, "ndim", 0) == 2:
                    return np.asarray(hdu.data, dtype=np.float64)
    except (OSError, ValueError, TypeError) as exc:
        raise CutoutError(f"not a FITS file: {exc}") from None
    raise CutoutError("no 2-D image HDU in the FITS file")


def render_png(data: bytes, size: int = 189) -> bytes:
    """PNG bytes of a FITS stamp, zscaled, upscaled to about ``size`` pixels wide."""
    from astropy.visualization import ZScaleInterval
    from PIL import Image

    img = fits_image(data)
    finite = np.isfinite(img)
    if not finite.any():
        scaled = np.zeros(img.shape, dtype=np.uint8)
    else:
        lo, hi = ZScaleInterval().get_limits(img[finite])
        if not hi > lo:
            lo, hi = float(np.min(img[finite])), float(np.max(img[finite])) + 1e-9
        norm = np.clip((np.where(finite, img, lo) - lo) / (hi - lo), 0, 1)
        scaled = (norm * 255).astype(np.uint8)
    # FITS rows go bottom-up; images top-down.
    pil = Image.fromarray(scaled[::-1], mode="L")
    factor = max(1, size // max(pil.width, 1))
    if factor > 1:
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.Resampling.NEAREST)
    out = io.BytesIO()
    pil.save(out, format="PNG", optimize=True)
    return out.getvalue()


@functools.lru_cache(maxsize=512)
def cached_png(alert_id: str, kind: str, data: bytes) -> bytes:
    return render_png(data)
