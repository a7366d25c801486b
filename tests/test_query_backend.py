"""The v1/v2 decision is the SDK's own: one table through ours and the installed SDK's
`get_query_backend`, so a change in the SDK fails here before it sends reads to a missing endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from langsmith._internal._v2_migration_utils import get_query_backend

from workers.langsmith.door import QueryBackend

FLAGS: list[dict[str, Any] | None] = [
    None,
    {},
    {"ch_query_enabled": True},
    {"ch_query_enabled": False},
    {"sdb_query_enabled": True},
    {"sdb_query_enabled": False},
    {"ch_query_enabled": True, "sdb_query_enabled": True},
    {"ch_query_enabled": True, "sdb_query_enabled": False},
    {"ch_query_enabled": False, "sdb_query_enabled": True},
    {"ch_query_enabled": False, "sdb_query_enabled": False},
    {"ch_query_enabled": 0, "sdb_query_enabled": 1},
    {"ch_query_enabled": None, "sdb_query_enabled": "yes"},
    {"dataset_examples_multipart_enabled": True, "sdb_query_enabled": True, "ch_query_enabled": False},
]
# Versions a server reports: none (an /info that failed, or a build without one), older than
# the v2 methods (0.16.0), older than the queue items (0.16.14), current, unparseable.
VERSIONS = ["", "0.15.0", "0.16.9", "0.16.14", "0.18.0", "not-a-version"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: repr(f))
def test_our_backend_is_the_sdks_for_every_flag_and_version(flags: dict[str, Any] | None, version: str) -> None:
    # The version is in the table because it must not matter: the SDK's decision reads only the
    # flags, and ours once gated v2 on >= 0.16.0, sending a SmithDB-only server's reads to v1.
    sdk = get_query_backend(flags)
    ours = QueryBackend.of(flags)
    assert ours.value == sdk.value, (flags, version)


def test_every_sdk_backend_has_ours() -> None:
    from langsmith._internal._v2_migration_utils import QueryBackend as SdkBackend

    assert {b.value for b in SdkBackend} == {b.value for b in QueryBackend}


def test_smithdb_only_with_an_empty_or_old_version_reads_v2_only() -> None:
    flags = {"ch_query_enabled": False, "sdb_query_enabled": True}
    assert QueryBackend.of(flags) is QueryBackend.V2_ONLY
