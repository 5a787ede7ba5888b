"""Outgoing alerts: what Albireo tells the world about a neutrino or GW event and its optical candidates.

From a stored event (``multimessenger.revisions``) and the loci that coincide with it, one
*revision* of outgoing alerts is built (:mod:`.build`):

* ``neutrino`` — an IceCube-style single-neutrino notice (GCN unified schema
  ``icecube/single_neutrino_alerts``), for neutrino events;
* ``optical`` — a BOOM-style optical-candidate notice (``boom/alert``: ``data.targets`` with
  ``gcn_crossmatch``, ``data.photometry``), when the event has coincident loci;
* ``voevent`` — a VOEvent 2.0 packet (voevent-parse, checked against the 2.0 XSD);
* ``circular`` — a plain-text GCN-Circular-style report (:mod:`.circular`).

Every JSON notice is validated with jsonschema against the GCN schemas held locally, and the
VOEvent against the XSD, before anything is published. Revisions are numbered like GCN's
``record_number`` (1, 2, …; a new one only when the content changes); a retracted event yields
``alert_type: retraction`` notices. :mod:`.publish` stores a revision (``Store.put_outgoing``)
and publishes it through the :class:`~broker.ports.Sink` port, so file streams and Kafka work alike.
"""
