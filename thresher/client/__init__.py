"""Commands users run against a cluster: ``thresher run|suspend|resume|status``.

This package is the kubectl-side of Thresher: it reads and patches ``CollectionSchedule``
objects (an annotation, ``spec.suspend``, reading status and the Jobs a run created) and never
talks to the operator directly, so everything here can also be done with kubectl. It is not the
operator (``thresher/operator``), the job payloads (``thresher/jobs``) or the local cluster
(``thresher/devcluster``).

- ``cli``: the typer commands (thin: connect, call, print);
- ``views``: pure functions from the objects read to what is printed (the dashboard rows, the
  outcome of a waited-for run);
- ``cluster``: the connection, and every cluster error turned into one line a user can act on.
"""
