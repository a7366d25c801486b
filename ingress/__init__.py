"""The thin ingress: authenticate a LangSmith delivery and durably enqueue it in Redis."""
