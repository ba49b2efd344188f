"""JSON as every reader takes it: NaN and infinities, which JSON has no words for, written as
null, as JavaScript's JSON.stringify writes them. Python would write `NaN` and `Infinity`, which
`JSON.parse`, most JSON libraries and some `jq` builds refuse, the whole document unread. The
real server sends none; another server might."""

from __future__ import annotations

import json
import math
from typing import Any


def json_text(value: Any, **options: Any) -> str:
    """`json.dumps(value, **options)`, with every NaN and infinity in `value` as null."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite(value), **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
