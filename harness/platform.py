"""The platform's own names for what it reports: load steps, run steps, container image fields.

The harness reports what it observed in these terms, so that an author reads the same
words here as on the platform (docs/contract.md#load-steps and #run-steps).
"""

from __future__ import annotations

UPLOADING = "Uploading container image"
LOADING = "Loading model '{name}'"
CHECKING = "Checking status endpoint"
READY = "Ready"
FAILED = "Failed"
NOT_STARTED = "Not started"

# (step number, name, percentage) of a load, in order; the last step is READY or FAILED.
UPLOAD_STEP, LOAD_STEP, CHECK_STEP = LOAD_STEPS = ((1, UPLOADING, 0), (2, LOADING, 33), (3, CHECKING, 66))
FINAL_STEP = 4

RUN_STEPS = (
    (1, "Loading model", 0),
    (2, "Fetching inputs", 25),
    (3, "Submitting inputs", 50),
    (4, "Recording outputs", 75),
    (5, "Completed", 100),
)
