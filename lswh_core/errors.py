"""The error every start-up check raises, below settings and the parsers it calls."""

from __future__ import annotations


class SettingsError(ValueError):
    """A configuration variable has a value we cannot use."""
