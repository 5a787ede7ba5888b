"""Reconstruction scans, the SkyDriver pattern: a sky scan fanned out to parallel workers over a queue.

The flow, one job per module:

* :mod:`.model` — what a scan request may say (a neutrino notice or an event description, a
  registered reconstruction, an nside progression, a priority lane), checked before anything is
  stored; the scan record and its statuses;
* :mod:`.reconstructions` — the registry of reconstructions by name (a vectorised callable over a
  batch of HEALPix pixels, or a per-pixel callable wrapped into one) and the built-in
  ``track_gaussian``, whose answer is known analytically;
* :mod:`.refine` — which pixels a step scans: the whole sky at the first nside, then the children of
  the best pixels and of the pixels inside the current 90 % region (plus their neighbours);
* :mod:`.tasks` — the JSON messages on the queue: pixel tasks (two topics: realtime ahead of
  backfill) and pixel results, decoded with bounds (the topics are a trust boundary);
* :mod:`.worker` — ``albireo scan-worker``: evaluates tasks, publishes results, commits after the
  results are acknowledged (a killed worker's tasks are redelivered);
* :mod:`.server` — ``albireo scan-server``: starts queued scans, collects results (deduplicated by
  scan, nside and pixel), refines, finishes, keeps the manifest (done per nside, rate, ETA);
* :mod:`.result` — the result exactly as ``icecube-skyreader``'s ``SkyScanResult`` serialises it,
  and the 50 %/90 % contours and areas from skyreader's own functions.

Everything reaches the outside through ports only: the :class:`~broker.ports.Store` (scan records
and pixel results), :class:`~broker.ports.Source`/:class:`~broker.ports.Sink` (Kafka in production,
the SQLite queue on the embedded stack); :mod:`broker.assemble` picks the adapters.
"""
