"""RQ workers: hydrate runs, join their feedback, write dataset examples idempotently."""
