"""What the job path records, so `lswh status`, reconciliation and retries can read it back:
per-delivery run accounting (`accounting.py`), which runs of each rule arrived (`received.py`),
which (action, run) pairs of a delivery are done (`done.py`), and the worker process's
Prometheus metrics (`metrics.py`)."""
