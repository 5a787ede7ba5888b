"""Stage 6, multi-messenger (between crossmatch and filters): neutrino and gravitational-wave events.

Planned modules: notices (GCN JSON, LVK ``igwn.gwalert``, VOEvent), localizations and credible
regions, coincidence with loci, reconstruction scans (the SkyDriver pattern), outgoing alerts and
the FAIR event catalog. Nothing here yet: the pipeline's coincidence stage is a no-op until it lands.
"""
