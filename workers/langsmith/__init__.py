"""Everything the workers ask LangSmith goes through here: the door (`door.py`, `LangSmith`: runs,
feedback, datasets, examples, rules, annotation queues, /info and the query backend), the one way
both SDK clients are built (`clients.py`), and under both clients every request's rate budget,
retries and figures (`transport.py`, with the budgets shared in Redis by `budget.py`)."""
