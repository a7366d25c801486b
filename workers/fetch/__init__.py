"""A run's inputs and outputs: inline in the delivery, else fetched from its presigned URL (`s3.py`:
which URLs may be fetched, and aiohttp with the address checks that stop DNS rebinding), else
left for one bulk read through the LangSmith API (`hydrate.py` decides, field by field)."""
