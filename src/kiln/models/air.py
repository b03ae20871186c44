"""AIR identifiers: `source:id@version`, optionally as a Civitai `urn:air:...` URN."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kiln.errors import InvalidRequestError

_AIR = re.compile(
    r"^(?:urn:air:(?:[a-z0-9_-]+:){0,2})?(?P<source>[a-z0-9-]+):(?P<id>[^@\s:]+)@(?P<version>[^@\s]+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AIR:
    source: str
    id: str
    version: str

    def __str__(self) -> str:
        return f"{self.source}:{self.id}@{self.version}"


def parse_air(text: object, parameter: str = "model") -> AIR:
    """Parse `text`; a malformed identifier raises `InvalidRequestError` naming `parameter`.

    >>> str(parse_air("urn:air:sd1:checkpoint:civitai:4201@130072"))
    'civitai:4201@130072'
    """
    match = _AIR.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequestError(
            f"'{parameter}' must be an AIR identifier 'source:id@version' (e.g. 'kiln:shapes@1'), "
            f"got {text!r}.",
            code=f"invalid{parameter[0].upper()}{parameter[1:]}",
            parameter=parameter,
            type="string",
        )
    return AIR(match["source"].lower(), match["id"], match["version"])
