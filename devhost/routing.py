"""HTTP route templates as the Functions host reads them (ASP.NET Core syntax).

`results/{testId}/aggregate`, constraints such as `{id:int}`, optional `{x?}`, defaults `{x=1}`
and catch-all `{*rest}`. Literal segments match case-insensitively; values are passed as strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

_PARAM = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+", "long": r"-?\d+", "bool": r"(?i:true|false)", "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?", "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[^/]+",
}


@dataclass
class RouteTemplate:
    template: str
    regex: re.Pattern[str] = field(init=False)
    defaults: dict[str, str] = field(init=False, default_factory=dict)
    literal_weight: int = field(init=False, default=0)
    param_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        parts: list[str] = []
        for i, segment in enumerate(self.template.strip("/").split("/")):
            if not segment:
                continue
            sep = "/" if i else ""
            match = _PARAM.fullmatch(segment)
            optional = match and (match.group(1).rstrip().endswith("?") or "=" in match.group(1))
            if match and optional:
                parts.append(f"(?:{sep}{self._param(match.group(1))})?")
            else:
                parts.append(sep + self._segment(segment))
        self.regex = re.compile("^" + "".join(parts) + "/?$")

    def _segment(self, segment: str) -> str:
        out, pos = [], 0
        for match in _PARAM.finditer(segment):
            literal = segment[pos:match.start()]
            out.append(f"(?i:{re.escape(literal)})" if literal else "")
            self.literal_weight += len(literal)
            out.append(self._param(match.group(1)))
            pos = match.end()
        tail = segment[pos:]
        self.literal_weight += len(tail)
        out.append(f"(?i:{re.escape(tail)})" if tail else "")
        return "".join(out)

    def _param(self, spec: str) -> str:
        self.param_count += 1
        spec = spec.strip()
        catch_all = spec.startswith("*")
        spec = spec.lstrip("*").rstrip("?")
        spec, _, default = spec.partition("=")
        name, *constraints = spec.split(":")
        if not name.isidentifier():
            raise ValueError(f"route {self.template!r}: bad parameter name {name!r}")
        if default:
            self.defaults[name] = default
        pattern = ".*" if catch_all else r"[^/]+"
        for constraint in constraints:
            base = constraint.split("(")[0].lower()
            if base in _CONSTRAINTS:
                pattern = _CONSTRAINTS[base]
            elif base == "regex":
                pattern = constraint[constraint.index("(") + 1:-1]
        return f"(?P<{name}>{pattern})"

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for `path` (relative to the route prefix, still percent-encoded) or None."""
        found = self.regex.match(path.strip("/") if path != "/" else "")
        if not found:
            return None
        values = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        return {**self.defaults, **values}
