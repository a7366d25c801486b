"""A local LangSmith stand-in for tests and `lswh dev`, behaving like LangSmith Cloud.

It answers the API calls the pipeline makes through the real `langsmith` SDK (0.15.x) — with Cloud's
per-key rate limits, `/info` flags, v1 and v2 run reads, examples, feedback and rules — serves
presigned-looking S3 objects, injects faults and latency, and has an admin API under `/_admin`
(no key) to preload and read back state. All state is in memory.

    python -m lswh_standin --port 1984 [--no-limits] [--flags cloud|v1-only|v2-only]
                           [--latency-ms N] [--preload-fixture]
"""

from lswh_standin.admin import FIXTURE_INPUTS, FIXTURE_OUTPUTS, FIXTURE_PATH, fixture_run
from lswh_standin.app import app_from_env, create_app
from lswh_standin.cli import main
from lswh_standin.profiles import PROFILES
from lswh_standin.state import API_KEY_PREFIX, DEFAULT_API_KEY, SESSION_ID, TENANT_ID

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_API_KEY",
    "FIXTURE_INPUTS",
    "FIXTURE_OUTPUTS",
    "FIXTURE_PATH",
    "PROFILES",
    "SESSION_ID",
    "TENANT_ID",
    "app_from_env",
    "create_app",
    "fixture_run",
    "main",
]
