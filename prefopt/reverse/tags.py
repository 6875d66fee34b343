"""Regular expressions over the REVERSE tags, built from their one declaration in :mod:`prefopt.models.tokens`.

Renaming a tag there renames it here: no module of ``prefopt/reverse/`` spells a tag literally in code.
"""

from __future__ import annotations

import re

from prefopt.models.tokens import CONFIDENT_CLOSE, REVERSE_TOKENS, SPAN_OPEN, UNCONFIDENT_CLOSE

__all__ = ["SPAN_OPEN", "CONFIDENT_CLOSE", "UNCONFIDENT_CLOSE", "TAG_RE", "UNCONFIDENT_RE", "tag"]

_SPAN, _CN, _UN = (re.escape(t) for t in (SPAN_OPEN, CONFIDENT_CLOSE, UNCONFIDENT_CLOSE))

#: Any one of the three tags.
TAG_RE = re.compile("|".join(re.escape(t) for t in REVERSE_TOKENS))
#: An unconfident phrase: an open span closed by the unconfident tag with no other tag between (group 1: the phrase).
UNCONFIDENT_RE = re.compile(rf"{_SPAN}((?:(?!{_SPAN}|{_CN}).)*?){_UN}", re.DOTALL)


def tag(phrase: str, confident: bool = True) -> str:
    """``phrase`` wrapped in the span tags, closed as confident or unconfident."""
    return f"{SPAN_OPEN}{phrase}{CONFIDENT_CLOSE if confident else UNCONFIDENT_CLOSE}"
