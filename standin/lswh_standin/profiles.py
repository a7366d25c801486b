"""What `GET /info` reports, per kind of LangSmith server, and which run-read endpoints that server has.

How the SDK (langsmith 0.15.1) reads `/info`:

- `instance_flags.ch_query_enabled` (absent = true) and `instance_flags.sdb_query_enabled` (absent =
  false) give the query backend: `_internal/_v2_migration_utils.get_query_backend` -> CLICKHOUSE_ONLY
  (ch only), DUAL (both) or SMITHDB_ONLY (sdb only).
- This flag pair is what switches the runs read path. `Client.read_run` uses `GET /runs/{id}` unless
  the backend is SMITHDB_ONLY, where it goes through the v2 query; `Client.get_test_results` lists runs
  with v1 `POST /runs/query` only when CLICKHOUSE_ONLY and with `runs.query_v2` otherwise;
  `_load_child_runs` refuses on SMITHDB_ONLY. So: CLICKHOUSE_ONLY -> v1 runs path; DUAL or
  SMITHDB_ONLY -> v2 runs path (`POST /api/v2/runs/query`, `GET /api/v2/runs/{id}`); SMITHDB_ONLY has no
  v1 run reads at all.
- `version` gates the generated client's resources: `Client.runs`, `.evaluators`, `.datasets` check
  `_check_backend_version(min_version="0.16.0")`, `.annotation_queues` 0.16.14 (its items endpoints),
  `.sessions` 0.18.0. Below the minimum the SDK only logs a warning; the docs ("Migrate to
  SmithDB-backed SDK methods", deployment support) say self-hosted servers have the v2 methods from
  0.16.0, so the older server here has no `/api/v2` routes.
- `instance_flags.dataset_examples_multipart_enabled` makes `create_examples` / `update_examples` use
  `/v1/platform/datasets/{id}/examples` (multipart); without it they use the JSON `/examples/bulk`.

Profiles (`--flags`, `STANDIN_FLAGS`, `POST /_admin/info`):

- `cloud`: LangSmith Cloud (US SaaS: "Methods are fully SmithDB-backed", while the v1 reads keep
  working until their announced removal): both backends (DUAL), v2 and v1 reads, multipart on.
  Version 0.18.0, the highest minimum the pinned SDK checks, so no resource warns.
- `v1-only`: a self-hosted server older than 0.16.0: ClickHouse only, no `/api/v2` routes.
- `v2-only`: a SmithDB-only server: v2 reads only; v1 `GET /runs/{id}` and `POST /runs/query` answer 404.
- `v2-only-unversioned`: the same server reporting an empty `version` (a build that does not stamp
  one). The SDK still reads it SMITHDB_ONLY (`get_query_backend` reads only the flags) and skips its
  version checks (`_check_backend_version` returns on an empty version).
- `v2-only-old`: a SmithDB-only server at 0.16.9: the v2 methods (from 0.16.0) but not the
  annotation-queue items resource, which "landed in backend 0.16.14" (client.py
  `Client.annotation_queues`): `POST`/`GET /api/v1/platform/annotation-queues/{id}/items` answer 404
  as any unknown route does; the queue listing, older, is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    version: str
    instance_flags: dict[str, Any] = field(default_factory=dict)
    v1_runs: bool = True
    v2_api: bool = True
    queue_items: bool = True  # the annotation-queue items resource (server >= 0.16.14)

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "license_expiration_time": None,
            "batch_ingest_config": {
                "use_multipart_endpoint": True,
                "size_limit": 100,
                "size_limit_bytes": 20_971_520,
            },
            "instance_flags": dict(self.instance_flags),
        }


_MULTIPART = {"dataset_examples_multipart_enabled": True, "examples_multipart_enabled": True}

PROFILES: dict[str, Profile] = {
    "cloud": Profile(
        "cloud", "0.18.0", {**_MULTIPART, "ch_query_enabled": True, "sdb_query_enabled": True}
    ),
    "v1-only": Profile(
        "v1-only", "0.15.0", {**_MULTIPART, "ch_query_enabled": True, "sdb_query_enabled": False}, v2_api=False
    ),
    "v2-only": Profile(
        "v2-only", "0.18.0", {**_MULTIPART, "ch_query_enabled": False, "sdb_query_enabled": True}, v1_runs=False
    ),
    "v2-only-unversioned": Profile(
        "v2-only-unversioned", "", {**_MULTIPART, "ch_query_enabled": False, "sdb_query_enabled": True},
        v1_runs=False,
    ),
    "v2-only-old": Profile(
        "v2-only-old", "0.16.9", {**_MULTIPART, "ch_query_enabled": False, "sdb_query_enabled": True},
        v1_runs=False, queue_items=False,
    ),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown flags profile {name!r}; one of: {', '.join(PROFILES)}") from None
