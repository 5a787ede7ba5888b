"""The filter stage: astronomers' Python filters (the ANTARES devkit contract) run over loci.

One module per job, in the order a filter meets them:

* :mod:`~broker.filtering.contract` the filter contract (``BaseFilter``, ``REQUIRED_*``) and loading code;
* :mod:`~broker.filtering.registry` revisions with a status, stored beside the loci (add, enable, test, backfill);
* :mod:`~broker.filtering.runner`   the in-process runner and its bookkeeping (errors, timings, auto-disable);
* :mod:`~broker.filtering.sandbox`  child processes with limits hosting untrusted filters;
* :mod:`~broker.filtering.platform` what the pipeline calls: built-ins in process, user filters in the sandbox;
* :mod:`~broker.filtering.devkit`   conversions between antares-devkit locus dicts and ours;
* :mod:`~broker.filtering.notify`   error and auto-disable notifications (Slack-compatible webhook).
"""

from broker.filtering.contract import BaseFilter

#: what filter authors import: ``from broker.filtering import BaseFilter`` (or the devkit's own).
__all__ = ["BaseFilter"]
