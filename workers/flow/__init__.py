"""What a job does with a delivery's runs, below the RQ face in workers/jobs.py: one slice of runs
through feedback, hydration, transforms and actions (`slices.py`); a thread rule's deliveries, one
example per thread (`threads.py`); a run's one outcome from its actions' (`outcome.py`); and the
synthetic deliveries that feed runs found through the API (backfill, reconciliation) to the same
path (`synthetic.py`)."""
