"""Thresher's API: the single source of truth for what users write and what jobs report.

- ``names``: the contract's names (group, version, kind, labels, annotations, exit codes,
  run-result path), standard library only;
- ``schedule``: the ``CollectionSchedule`` models (spec and status: what the operator writes)
  and ``parse_schedule``;
- ``cron``: pure cron/time functions (next run, staleness, H resolution), Kubernetes semantics;
- ``crd``: the CRD generated from the models (``thresher crd generate``);
- ``tmdb``, ``drone``: the job blocks; ``runresult``: the job -> operator contract.

Nothing is re-exported here, so ``import thresher.api.runresult`` inside a job image stays cheap.
"""
