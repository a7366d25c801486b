"""What the ingress and the workers share: settings, the job contract, Redis, redaction."""
