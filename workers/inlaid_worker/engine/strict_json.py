"""A JSON schema's grammar whose length-bounded strings are strict JSON (xgrammar 0.2.9's are not)."""

from __future__ import annotations

import re
from typing import Any

from inlaid_worker.engine.structured import require_xgrammar

# xgrammar 0.2.9 turns a string bounded by minLength/maxLength into `"\"" X{min, max} "\""` with the character rule
# `X ::= (([^\"\\\r\n]))`: raw control characters other than CR and LF pass (invalid JSON) and escapes do not.
# strict_json_schema_grammar gives such rules one JSON string character instead: an unescaped character other than
# U+0000-U+001F, `"` and `\`, or an escape (each counts as one character of the value, as minLength/maxLength mean).
_LOOSE_CHARS = re.compile(r'^(\S+) ::= \(\(\[\^\\"\\\\\\r\\n\]\)\)$', re.MULTILINE)
_JSON_CHAR = r'(([^\0-\x1f\"\\]) | ("\\" (([\"\\/bfnrt]) | ("u" [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9]))))'


def strict_json_schema_grammar(spec: str) -> Any:
    """xgrammar's grammar of the JSON schema `spec` (compact separators), with length-bounded strings made valid
    JSON (see _LOOSE_CHARS); the Grammar itself when it has no such string."""
    grammar = require_xgrammar().Grammar.from_json_schema(spec, any_whitespace=False)
    text, fixed = _LOOSE_CHARS.subn(lambda m: f"{m.group(1)} ::= {_JSON_CHAR}", str(grammar))
    return require_xgrammar().Grammar.from_ebnf(text) if fixed else grammar
