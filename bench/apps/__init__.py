"""Baseline ingress apps, served with the same uvicorn settings as `ingress.app:app`."""
