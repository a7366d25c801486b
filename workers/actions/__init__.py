"""Actions: where a rule's runs go (the rules file's `actions`), one module each, all dispatched
through one interface (`base.Destination`, registered by kind name in lswh_core/actions.py):

- `dataset.py`: examples in a LangSmith dataset (the writer, today's behaviour), split set at creation;
- `annotation_queue.py`: the run added to a LangSmith annotation queue (by name or id), once;
- `jsonl.py`: examples appended to JSON Lines files per dataset, one file per worker process and day.

Each is a pure function of the hydrated run plus one writer at the edge. The job path
(workers/flow/slices.py) records every (action key, run id) pair it finished (`done.py`;
`lswh_core.rules.Action.key` names the action within its rule), so a failed action is retried
alone, without redoing the others. Importing this package registers the three built-in kinds'
worker halves; a kind of one's own is a module that subclasses `Destination` and calls
`register` (docs/rules.md, "Actions of your own").
"""

from workers.actions import annotation_queue, dataset, jsonl
from workers.actions.base import Destination, destination, register

__all__ = ["Destination", "annotation_queue", "dataset", "destination", "jsonl", "register"]
