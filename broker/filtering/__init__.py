"""The filter stage: astronomers' Python filters (the ANTARES devkit contract) run over loci.

One module per job, in the order a filter meets them:

* :mod:`~broker.filtering.contract` the filter contract (``BaseFilter``, ``REQUIRED_*``) and loading code;
* :mod:`~broker.filtering.registry` revisions with a status, stored beside the loci (add, enable, test, backfill);
* :mod:`~broker.filtering.runner`   the in-process runner and its bookkeeping (errors, timings, auto-disable);
* :mod:`~broker.filtering.sandbox`  one isolated child process per user filter, results checked;
* :mod:`~broker.filtering.wire`     the data-only frames between the worker and those children (msgpack);
* :mod:`~broker.filtering.zygote`   the sandbox's own processes: a zygote forking each filter's child;
* :mod:`~broker.filtering.isolation` the OS boundaries: user, namespaces, read-only root, rlimits, seccomp;
* :mod:`~broker.filtering.guards`   the audit hook giving the first, friendly "no";
* :mod:`~broker.filtering.platform` what the pipeline calls: built-ins in process, user filters in the sandbox;
* :mod:`~broker.filtering.devkit`   conversions between antares-devkit locus dicts and ours;
* :mod:`~broker.filtering.notify`   error and auto-disable notifications (Slack-compatible webhook).
"""

from broker.filtering.contract import BaseFilter

#: what filter authors import: ``from broker.filtering import BaseFilter`` (or the devkit's own).
__all__ = ["BaseFilter"]
