"""Catalog definitions: what a catalog is called, which columns we keep, how far a match may be.

Names follow ANTARES where ANTARES has the catalog, because filters written for ANTARES test
``"RC3" in locus.catalog_objects`` and must keep working unmodified.  A definition carries its
provenance and licence so that ``albireo catalog list`` can say where every row came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RadiusPolicy:
    """How close a locus must be to a row to match it.

    ``fixed``: one cone radius for every row (point sources, ANTARES uses 1" for most catalogs).
    ``column``: each row has its own radius (extended sources: match inside the galaxy's own
    semi-major axis, as ANTARES does for RC3) = ``column * scale`` arcsec; rows where the column is
    missing or non-positive fall back to ``arcsec``; ``log10`` columns give ``10**column * scale``.
    """

    kind: str = "fixed"
    arcsec: float = 1.0
    column: str | None = None
    scale: float = 1.0
    #: the column holds log10 of the size (RC3's logD25): radius = 10**column * scale
    log10: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "column"):
            raise ValueError(f"radius policy kind must be 'fixed' or 'column', not {self.kind!r}")
        if self.kind == "column" and not self.column:
            raise ValueError("radius policy 'column' needs a column name")
        if not (self.arcsec >= 0):
            raise ValueError(f"radius must be >= 0 arcsec, got {self.arcsec}")


@dataclass(frozen=True)
class CatalogDefinition:
    """Everything needed to build, describe and match one catalog."""

    name: str
    description: str = ""
    ra_column: str = "ra"
    dec_column: str = "dec"
    #: payload columns kept in the index (and returned in ``catalog_objects``); None keeps all
    columns: tuple[str, ...] | None = None
    radius: RadiusPolicy = field(default_factory=RadiusPolicy)
    provenance: str = ""
    licence: str = ""
    #: VizieR catalogue id for ``albireo catalog ingest --vizier`` (astroquery), if any
    vizier: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"invalid catalog name {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["columns"] = list(self.columns) if self.columns is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CatalogDefinition:
        d = dict(d)
        d["radius"] = RadiusPolicy(**d.get("radius", {}))
        if d.get("columns") is not None:
            d["columns"] = tuple(d["columns"])
        return cls(**d)


OPENNGC = CatalogDefinition(
    name="openngc",
    description="OpenNGC: NGC/IC objects (galaxies, clusters, nebulae) with sizes, magnitudes, redshifts",
    columns=("name", "type", "ra", "dec", "const", "majax", "minax", "pa", "bmag", "vmag", "hubble",
             "radvel", "redshift", "messier", "commonnames", "identifiers"),
    radius=RadiusPolicy(kind="column", column="majax", scale=30.0, arcsec=1.0),
    provenance="OpenNGC database shipped in the PyPI package pyongc (Mattia Verga, github.com/mattiaverga/OpenNGC)",
    licence="CC-BY-SA-4.0",
)

# Definitions for catalogs ANTARES matches against, ingestible from VizieR with
# `albireo catalog ingest --vizier NAME`. VizieR's computed _RAJ2000/_DEJ2000 columns are decimal degrees.
RC3 = CatalogDefinition(
    name="RC3",
    description="Third Reference Catalogue of Bright Galaxies (de Vaucouleurs+ 1991); matched inside D25/2",
    ra_column="_RAJ2000",
    dec_column="_DEJ2000",
    # logD25 is log10 of the D25 diameter in units of 0.1 arcmin: radius = 10**logD25 * 3 arcsec
    radius=RadiusPolicy(kind="column", column="logD25", log10=True, scale=3.0, arcsec=1.0),
    provenance="VizieR VII/155",
    licence="CDS/VizieR terms (free for scientific use, cite the catalogue)",
    vizier="VII/155",
)
VERON = CatalogDefinition(
    name="veron_agn_qso",
    description="Veron-Cetty & Veron (2010) quasars and AGN, 13th edition",
    ra_column="_RAJ2000",
    dec_column="_DEJ2000",
    provenance="VizieR VII/258",
    licence="CDS/VizieR terms (free for scientific use, cite the catalogue)",
    vizier="VII/258",
)
MILLIQUAS = CatalogDefinition(
    name="milliquas",
    description="Million Quasars catalog (Flesch)",
    ra_column="_RAJ2000",
    dec_column="_DEJ2000",
    provenance="VizieR VII/294",
    licence="CDS/VizieR terms (free for scientific use, cite the catalogue)",
    vizier="VII/294",
)
TWOMASS_XSC = CatalogDefinition(
    name="2mass_xsc",
    description="2MASS Extended Source Catalog",
    ra_column="_RAJ2000",
    dec_column="_DEJ2000",
    provenance="VizieR VII/233",
    licence="CDS/VizieR terms; 2MASS data are public (cite Skrutskie et al. 2006)",
    vizier="VII/233",
)

BUILTIN: dict[str, CatalogDefinition] = {d.name: d for d in (OPENNGC, RC3, VERON, MILLIQUAS, TWOMASS_XSC)}


def get_definition(name: str) -> CatalogDefinition:
    """The built-in definition called ``name``; KeyError lists the known ones."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise KeyError(f"no built-in catalog definition {name!r}; known: {sorted(BUILTIN)}") from None
