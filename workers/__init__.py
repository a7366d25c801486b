"""RQ workers: a delivery in, its runs hydrated, feedback joined, examples written idempotently.

The map, in the order a delivery passes through it (each module once):

- `jobs.py`: the RQ job functions and their exceptions (RQ stores these dotted names, so they
  stay here across releases), and a delivery's flow: load it, plan it, a slice at a time, record;
- `flow/`: what a job does with its runs: one slice of runs (`slices.py`), a thread rule's
  threads (`threads.py`), a run's one outcome (`outcome.py`), synthetic deliveries for backfill
  and reconciliation (`synthetic.py`);
- `fetch/`: a run's inputs and outputs, inline, from a presigned object (`s3.py`, aiohttp, the
  SSRF checks) or left for the API (`hydrate.py`);
- `langsmith/`: the one door to LangSmith (`door.py`), the one way its clients are built
  (`clients.py`), every request's budget, retries and figures (`transport.py`, `budget.py`);
- `build/`: what a run becomes, pure: example ids and metadata (`examples.py`), the feedback
  join and which correction wins (`feedback.py`), splits, content dedup;
- `actions/`: where a rule's runs go, one registered kind per module (`base.py` is the interface);
- `bookkeeping/`: what the job path records in Redis and Prometheus: per-delivery accounting,
  the received index, (action, run) pairs done, the worker's metrics.

Beside them: `worker.py` (`lswh worker`, the RQ worker process), `runtime.py` (what a worker
process keeps between jobs: one I/O loop, clients, pools), `errors.py` (a failure is transient
or permanent), `transforms.py` (what a user's transform receives and returns; a public import
path), `reconcile.py` (the periodic reconciliation job; RQ stores its name too).
"""
