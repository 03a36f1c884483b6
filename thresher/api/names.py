"""The names of Thresher's contract with Kubernetes and its jobs, defined once.

Everything another program (kubectl, the CronJob controller, a job image, a dashboard) sees
by name: the API group and kind, the labels and annotations on what the operator creates or
reads, the exit codes of Thresher's jobs and where they write their run result. The operator,
the jobs, the CLI and the demo import these; nothing else spells them out.

No imports beyond the standard library: a job image imports this without the API models.
"""

from __future__ import annotations

import enum

# --- the custom resource ---------------------------------------------------------------------

GROUP = "thresher.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CollectionSchedule"
PLURAL = "collectionschedules"
SINGULAR = "collectionschedule"
SHORT_NAMES = ("csched",)  # "cs" is componentstatuses
CATEGORIES = ("thresher",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# --- labels on everything the operator creates (CronJobs, Jobs, Pods) -------------------------

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "thresher"
SCHEDULE_LABEL = f"{GROUP}/schedule"
JOB_TYPE_LABEL = f"{GROUP}/job-type"

# --- annotations --------------------------------------------------------------------------------

# On a CollectionSchedule, set by `thresher run` or kubectl: start a run now (value: a token).
RUN_NOW_ANNOTATION = f"{GROUP}/run-now"
# On a CollectionSchedule, set by `thresher backfill`: create the runs of a past window (value:
# JSON {"from": RFC 3339, "to": RFC 3339, "token": a new value per request}); on their Jobs:
# that they backfill (they do not move lastSuccessfulTime, which is about the current runs).
BACKFILL_ANNOTATION = f"{GROUP}/backfill"
BACKFILL_RUN_ANNOTATION = f"{GROUP}/backfill-run"
# On a manual run's Job: the run-now token it was created for, and that it was manual.
RUN_TOKEN_ANNOTATION = f"{GROUP}/run-now-token"
MANUAL_ANNOTATION = f"{GROUP}/manual-run"
# On a finished Job whose run is in its schedule's status (recording is idempotent).
RECORDED_ANNOTATION = f"{GROUP}/recorded"
# On a Job the operator ended because it was blocked longer than spec.startupTimeoutSeconds:
# JSON {"outcome": "FailedToStart"|"NodeLost", "reason": BLOCKED_REASON, "message": "..."}, set
# in the same patch that stops the Job, so the run is recorded with it whenever the Job ends.
STARTUP_VERDICT_ANNOTATION = f"{GROUP}/startup-verdict"
# On the Job of a retry attempt (spec.retryPolicy): the run's first Job (the run's identity, its
# jobName in recentRuns) and the attempt's number (2, 3, ...).
RETRY_OF_ANNOTATION = f"{GROUP}/retry-of"
ATTEMPT_ANNOTATION = f"{GROUP}/attempt"
# Set by the CronJob controller on the Jobs it creates (upstream's name, read here).
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
# kopf's own bookkeeping (progress, diff base) lives in annotations under this prefix.
KOPF_PREFIX = f"kopf.{GROUP}"

# The server-side-apply field manager and Event reporter of the operator.
FIELD_MANAGER = "thresher"
REPORTING_CONTROLLER = f"{GROUP}/operator"

# --- jobs ---------------------------------------------------------------------------------------

# Where a job writes its run result (the container's termination message path), unless
# $THRESHER_RESULT_PATH says otherwise (tests, runs by hand).
RESULT_PATH = "/dev/termination-log"
RESULT_PATH_ENV = "THRESHER_RESULT_PATH"


class ExitCode(enum.IntEnum):
    """Process exit codes of Thresher jobs. The operator maps them to run outcomes."""

    OK = 0
    INTERNAL = 1  # a bug or an unexpected error
    CONFIG = 2  # bad arguments, bad spec, missing or rejected credentials: retrying will not help
    UPSTREAM = 3  # an upstream (API, storage) failed after retries: retrying later may help
    QUALITY = 4  # the run finished but its data failed the quality thresholds
    PARTIAL = 5  # the run finished but some inputs failed (reported in the result)

# The logical time of a run (its due time, or the window it backfills): passed to the job as an
# environment variable and kept on the Job as an annotation (docs/scheduling.md).
LOGICAL_TIME_ENV = "THRESHER_LOGICAL_TIME"
LOGICAL_TIME_ANNOTATION = "thresher.dev/logical-time"

# Fan-out (a drone run as an Indexed Job, docs/drone.md "Fan-out"): the run's id shared by its
# indexes (the Job's name, through the downward API), Kubernetes' own index variable and the
# labels/annotations it sets on the pods of an Indexed Job (upstream's names, read here).
RUN_ID_ENV = "THRESHER_RUN_ID"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
