"""On PYTHONPATH ahead of site-packages, this makes `import hiredis` fail, so redis-py runs its
pure-Python parser: how `python -m bench.ingress --apps floor-nohiredis,...` measures an app
as it runs without the `hiredis` package, in the same run as the apps with it."""

raise ImportError("hiredis hidden by bench/nohiredis")
