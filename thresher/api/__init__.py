"""Thresher's API: the single source of truth for what users write and what jobs report.

- ``schedule``: the ``CollectionSchedule`` models (spec and status) and ``parse_schedule``;
- ``cron``: pure cron/time functions (next run, staleness, H resolution), Kubernetes semantics;
- ``crd``: the CRD generated from the models (``thresher crd generate``);
- ``tmdb``, ``drone``: the job blocks; ``runresult``: the job -> operator contract.

Nothing is re-exported here, so ``import thresher.api.runresult`` inside a job image stays cheap.
"""
