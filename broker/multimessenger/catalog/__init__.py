"""The FAIR catalog of multi-messenger events, their localizations and their optical associations.

Modelled on IceCat-1 (IceCube's catalog of alert tracks), kept under the FAIR principles:

* :mod:`.identifiers` — persistent identifiers for every event, association and catalog version
  (``albireo:event/<event>/v<n>`` …, optional DOI and ARK forms): **findable**;
* :mod:`.records` — an event's catalog record (IceCat-1's columns, associations, provenance);
* :mod:`.versions` — immutable record versions and numbered published catalog versions
  (``albireo release publish``): **reusable** (licence, provenance, versions never rewritten);
* :mod:`.exports` — FITS, VOTable, CSV, ECSV, Parquet, JSON with units and UCDs: **interoperable**;
* :mod:`.conesearch` — the IVOA Simple Cone Search 1.03 response: **interoperable**, **accessible**;
* :mod:`.skymap` — each event's sky map as a multi-order HEALPix FITS file;
* :mod:`.metadata` — schema.org ``Dataset`` JSON-LD and DataCite kernel-4 records: **findable**.

The portal serves it all (``web/catalog.py``: ``/api/catalog/v1/…``, ``/api/catalog/scs``, the
event landing pages); ``docs/catalog.md`` states the identifier scheme and the versioning rules.
"""
