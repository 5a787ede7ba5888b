"""Operator tooling, apart from the runtime: local servers, sample data, the load generator.

* :mod:`~broker.ops.services`    fetch (Maven Central), start, check and stop Kafka, Cassandra, Elasticsearch;
* :mod:`~broker.ops.samples`     where the real sample alerts are on any installed machine;
* :mod:`~broker.ops.devkit_ztf`  antares-devkit's real locus re-encoded as genuine ZTF packets (the demo input);
* :mod:`~broker.ops.loadgen`     real packets replayed into Kafka, optionally jittered into a larger stream.
"""
