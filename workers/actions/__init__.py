"""Actions: where a rule's runs go (the rules file's `actions`), one module each.

- `dataset`: an example in a LangSmith dataset (the job path's writer, today's behaviour);
- `annotation_queue`: the run added to a LangSmith annotation queue (by name or id);
- `jsonl`: examples appended to JSON Lines files per dataset (`jsonl.py`).

Each action is idempotent on its own, and the job path records every (action key, run id) pair it
finished (`lswh_core.rules.Action.key` names the action within its rule), so a failed action is
retried alone, without redoing the others.
"""
