"""Identifiers as LangSmith spells them."""

from __future__ import annotations

import uuid


def is_uuid(text: str) -> bool:
    """Whether `text` is a UUID in any spelling `uuid.UUID` reads (rule ids, run ids in paths)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
