"""Ids and numbers in free text, replaced by placeholders so that texts differing only in them
group together (failed-job reasons in `lswh status`), and a placeholder text back into a
pattern that matches every text of its group (`lswh requeue --reason`)."""

from __future__ import annotations

import re

UUID = "<uuid>"
HEX = "<hex>"
NUMBER = "<n>"

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
# Hex ids (delivery ids, object ids): 8+ hex digits with at least one digit, so words like
# "deadbeef" or "accepted" stay words.
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
# Numbers standing alone or before a unit ("422", "12.5s"); not inside a name ("v2", "http2").
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")

_PATTERNS = {
    UUID: r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    HEX: r"[0-9a-fA-F]{8,}",
    NUMBER: r"\d+(?:\.\d+)?",
}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in _PATTERNS))


def mask(text: str) -> str:
    text = _UUID.sub(UUID, text)
    text = _HEX.sub(HEX, text)
    return _NUMBER.sub(NUMBER, text)


def pattern(text: str) -> re.Pattern[str]:
    """Literal text, except that each placeholder matches what `mask` replaced with it."""
    parts: list[str] = []
    end = 0
    for match in _PLACEHOLDER.finditer(text):
        parts += [re.escape(text[end:match.start()]), _PATTERNS[match.group()]]
        end = match.end()
    parts.append(re.escape(text[end:]))
    return re.compile("".join(parts))
