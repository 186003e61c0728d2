"""Identifiers: submission ids are ULIDs; test ids and student numbers are free text, but visible."""
from __future__ import annotations

import re
import unicodedata

ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
# Control (Cc) and format (Cf: zero-width spaces, bidirectional overrides) characters make ids that
# look alike but differ, or cannot be stored (NUL).
_INVISIBLE = frozenset({"Cc", "Cf"})


def invalid_identifier(value: str) -> str | None:
    """Why `value` cannot be an identifier, or None if it can."""
    if not value.strip():
        return "is empty"
    if value.isprintable():  # printable means no character of category C* (nor separators but " ")
        return None
    for ch in value:
        if unicodedata.category(ch) in _INVISIBLE:
            return f"contains the invisible or control character U+{ord(ch):04X}"
    return None
