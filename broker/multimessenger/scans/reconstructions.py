"""Reconstructions by name: what a worker evaluates for a batch of HEALPix pixels.

A reconstruction is a callable ``evaluate(event, nside, pixels, params)`` over a *batch* of RING
pixel indices (skyreader's ordering) returning an ``(n, 3)`` array of ``llh`` (−ln L: lower is
better), ``E_in``, ``E_tot`` — vectorised with numpy, as the built-in is. A reconstruction that can
only do one direction at a time registers a per-pixel callable ``fn(event, ra_deg, dec_deg,
params) -> llh | (llh, E_in, E_tot)`` with :func:`register_per_pixel`; the registry loops for it.

Real reconstructions plug in by name: a module that calls :func:`register` (or
:func:`register_per_pixel`) at import, named in ``scans.plugins`` (``module`` or ``module:attr``);
the workers, the server and the API import those modules at start (operator configuration, never
anything from a request).

The built-in ``track_gaussian`` is a track with angular error ``sigma_deg`` around the event's
direction: ``llh = d² / (2σ²)`` with ``d`` the great-circle distance. skyreader draws its 90 %
contour where ``2·Δllh = 4.61`` (Wilks, two degrees of freedom), so the analytic 90 % region is the
spherical cap of radius ``σ·√4.61`` (:func:`analytic_area`), which tests the whole system.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.multimessenger.scans.model import ScanEvent

Evaluate = Callable[[ScanEvent, int, np.ndarray, dict[str, float]], np.ndarray]

#: skyreader's 2·Δllh thresholds (``get_contour_levels``, Wilks with 2 dof) for the 50 % and 90 % regions.
LEVELS = {"50": 1.39, "90": 4.61}


@dataclass(frozen=True)
class Param:
    """One numeric parameter: its default and the bounds a request must respect."""

    default: float
    lo: float
    hi: float
    doc: str = ""


@dataclass(frozen=True)
class Reconstruction:
    name: str
    evaluate: Evaluate
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""
    vectorised: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc, "vectorised": self.vectorised,
                "params": {k: {"default": p.default, "min": p.lo, "max": p.hi, "doc": p.doc}
                           for k, p in self.params.items()}}


REGISTRY: dict[str, Reconstruction] = {}


def register(name: str, params: dict[str, Param] | None = None, doc: str = "") -> Callable[[Evaluate], Evaluate]:
    """Register a vectorised ``evaluate(event, nside, pixels, params) -> (n, 3) array`` under ``name``."""
    def deco(fn: Evaluate) -> Evaluate:
        REGISTRY[name] = Reconstruction(name, fn, dict(params or {}), doc or (fn.__doc__ or "").strip())
        return fn
    return deco


def register_per_pixel(name: str, params: dict[str, Param] | None = None, doc: str = "") -> Callable:
    """Register ``fn(event, ra_deg, dec_deg, params) -> llh | (llh, E_in, E_tot)``, evaluated pixel by pixel."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def evaluate(event: ScanEvent, nside: int, pixels: np.ndarray, p: dict[str, float]) -> np.ndarray:
            ra, dec = pixel_directions(nside, pixels)
            out = np.zeros((len(pixels), 3))
            for i in range(len(pixels)):
                v = fn(event, float(ra[i]), float(dec[i]), p)
                out[i] = (float(v), 0.0, 0.0) if np.isscalar(v) else tuple(float(x) for x in v)
            return out
        REGISTRY[name] = Reconstruction(name, evaluate, dict(params or {}), doc or (fn.__doc__ or "").strip(),
                                        vectorised=False)
        return fn
    return deco


def load_plugins(specs: list[str]) -> None:
    """Import the configured plug-in modules (``module`` or ``module:attr``); each registers itself."""
    for spec in specs:
        module, _, attr = spec.partition(":")
        mod = importlib.import_module(module)
        if attr:
            getattr(mod, attr)


def pixel_directions(nside: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (deg) of RING pixel centres, as skyreader reads them (``healpy.pix2ang``)."""
    import healpy

    theta, phi = healpy.pix2ang(nside, np.asarray(pixels, dtype=np.int64))
    return np.degrees(phi), 90.0 - np.degrees(theta)


def angular_distance(ra1: Any, dec1: Any, ra2: float, dec2: float) -> np.ndarray:
    """Great-circle distance (rad) between directions given in degrees (haversine: exact near zero)."""
    r1, d1, r2, d2 = np.radians(ra1), np.radians(dec1), math.radians(ra2), math.radians(dec2)
    h = np.sin((d1 - d2) / 2) ** 2 + np.cos(d1) * math.cos(d2) * np.sin((r1 - r2) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def analytic_area(sigma_deg: float, level: float = LEVELS["90"]) -> float:
    """deg² of ``track_gaussian``'s region ``2·Δllh ≤ level``: a spherical cap of radius σ·√level."""
    r = math.radians(sigma_deg) * math.sqrt(level)
    return 2 * math.pi * (1 - math.cos(r)) * (180 / math.pi) ** 2


def _burn(seconds: float) -> None:
    """Spend CPU (not sleep) for ``seconds``: a stand-in for a costly reconstruction."""
    end = time.perf_counter() + seconds
    x = 0.0
    while time.perf_counter() < end:
        x += math.sqrt(x + 1.0)


@register("track_gaussian", params={
    "sigma_deg": Param(1.0, 0.01, 30.0, "angular error of the track (deg)"),
    "work_ms": Param(0.0, 0.0, 1000.0, "CPU time spent per pixel, as a real reconstruction would (ms)"),
}, doc="A track with Gaussian angular error sigma_deg around the event direction: llh = d²/(2σ²).")
def track_gaussian(event: ScanEvent, nside: int, pixels: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Vectorised over the batch; ``work_ms`` burns CPU per pixel so scaling over workers can be measured."""
    ra, dec = pixel_directions(nside, pixels)
    d = angular_distance(ra, dec, event.ra, event.dec)
    sigma = math.radians(params.get("sigma_deg", 1.0))
    out = np.zeros((len(pixels), 3))
    out[:, 0] = d * d / (2 * sigma * sigma)
    work = params.get("work_ms", 0.0)
    if work > 0:
        _burn(work * len(pixels) / 1000.0)
    return out
