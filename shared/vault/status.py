"""Status fields merged onto a head entity: validation, encoding to Table properties and back.

Lists and dicts are stored as compact UTF-8 JSON in a *binary* property. Binary marks them
unambiguously as JSON (a plain string that happens to look like JSON stays a string) and a binary
property holds 64 KiB of UTF-8, twice the 32,768 UTF-16 characters a string property holds. Values
over the cap are cut to the longest prefix of items (still valid JSON) and "<name>Truncated": True is
recorded next to them; an uncut value removes a stale flag.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime

from azure.data.tables import EdmType, EntityProperty

from shared.vault.model import HEAD_PROPERTIES, PROPERTY_BYTES, as_utc, plain_datetime

STRING_CHARS = PROPERTY_BYTES // 2
# 255 is the service limit; leave room for the "<name>Truncated" flag.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,245}")
TRUNCATED_SUFFIX = "Truncated"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"status field name {name!r} is not allowed: Table Storage property names must match "
            "[A-Za-z_][A-Za-z0-9_]* (at most 246 characters)"
        )
    if name in HEAD_PROPERTIES:
        raise ValueError(f"status field {name!r} is vault metadata and cannot be changed")
    return name


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut_string(text: str) -> tuple[str, bool]:
    if _utf16_units(text) <= STRING_CHARS:
        return text, False
    cut = text[:STRING_CHARS]  # each character is at least one UTF-16 unit
    while _utf16_units(cut) > STRING_CHARS:
        cut = cut[: len(cut) - (_utf16_units(cut) - STRING_CHARS)]
    return cut, True


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a status list/dict: {value!r}")


def _cut_json(value: list | dict) -> tuple[bytes, bool]:
    encoded = _json_bytes(value)
    if len(encoded) <= PROPERTY_BYTES:
        return encoded, False
    items = list(value.items()) if isinstance(value, dict) else list(value)

    def rebuild(n: int) -> list | dict:
        return dict(items[:n]) if isinstance(value, dict) else items[:n]

    low, high = 0, len(items)  # longest prefix that fits: low fits, high does not
    while high - low > 1:
        mid = (low + high) // 2
        if len(_json_bytes(rebuild(mid))) <= PROPERTY_BYTES:
            low = mid
        else:
            high = mid
    return _json_bytes(rebuild(low)), True


def encode_fields(fields: Mapping[str, object]) -> tuple[dict[str, object], set[str]]:
    """(properties to merge, property names to remove) for a record_status call."""
    merge: dict[str, object] = {}
    remove: set[str] = set()
    for name, value in fields.items():
        check_name(name)
        flag: bool | None = None  # True: record "<name>Truncated"; False: clear it
        if value is None:
            remove.add(name)
        elif isinstance(value, bool):
            merge[name] = value
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise ValueError(f"status field {name!r} = {value} does not fit a 64-bit integer")
            merge[name] = value if -(2**31) <= value < 2**31 else EntityProperty(value, EdmType.INT64)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"status field {name!r} must be a finite float, not {value!r}")
            merge[name] = value
        elif isinstance(value, datetime):
            merge[name] = as_utc(value, f"status field {name!r}")
        elif isinstance(value, str):
            merge[name], flag = _cut_string(value)
        elif isinstance(value, list | tuple | dict):
            data, flag = _cut_json(list(value) if isinstance(value, tuple) else value)
            merge[name] = EntityProperty(data, EdmType.BINARY)
        else:
            raise ValueError(
                f"status field {name!r} has unsupported type {type(value).__name__}; "
                "use str, int, float, bool, datetime, list, dict or None"
            )
        flag_name = name + TRUNCATED_SUFFIX
        if flag is not None and flag_name not in fields:
            # Written either way (False = "not cut"), so clearing an old flag needs no read of the
            # head first; False flags are left out of VaultRecord.status.
            merge[flag_name] = flag
    overlap = set(merge) & remove
    if overlap:
        raise ValueError(f"status fields {sorted(overlap)} are both set and cleared in one call")
    return merge, remove


def visible_status(entity: Mapping[str, object], hidden: frozenset[str] | set[str]) -> dict[str, object]:
    """The status fields of a head: everything but `hidden`, without "<name>Truncated": False flags."""
    return {k: decode_property(v) for k, v in entity.items()
            if k not in hidden and not (k.endswith(TRUNCATED_SUFFIX) and v is False)}


def decode_property(value: object) -> object:
    """A head property as handed out in VaultRecord.status."""
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, bytes):
        return json.loads(value)
    if isinstance(value, datetime):
        return plain_datetime(value)
    return value
