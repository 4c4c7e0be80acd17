"""File-name components derived from user text: one rule for every folder the tool writes.

A leaf module (standard library only), so that writing results needs neither the spec nor
pydantic.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9_.=+-]+")


def safe_name(text: str) -> str:
    """A file-name component derived from user text (a pair, a trial id) that stays in its folder.

    Characters outside `A-Za-z0-9_.=+-` become `_` and leading dots are dropped, so no result is
    `..`, contains `/` or is hidden. The pair arrow `->` reads as `-to-`. When anything else had
    to change, 8 hex digits of the original's SHA-1 are appended so that two different inputs
    (`a/b`, `a_b`) never share a folder. Deterministic: a resumed sweep finds the same paths.
    """
    text = str(text)
    readable = text.replace("->", "-to-")
    cleaned = _SAFE_CHARS.sub("_", readable).lstrip(".")
    if cleaned != readable or not cleaned or len(cleaned) > 96:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[:96]}-{digest}" if cleaned else f"_{digest}"
    return cleaned


