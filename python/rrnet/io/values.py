"""The one conversion path for values read from file headers and catalogues.

A survey of millions of files holds every kind of damaged value (``OBSID = 1e30``,
``RA = 'NaN'``, ``SNR = -inf``, a boolean where a number belongs). One bad value must
never stop a run: :func:`convert` turns anything it cannot represent in the target
column type into ``None`` plus a one-line reason, which the caller records on the
row (the row itself is still processed).

Column types: ``int64`` (integers, or integral floats, within the signed 64-bit
range), ``float64`` (finite numbers only: NaN and infinities are not values), and
``str`` (text, stripped; numbers are formatted).
"""

from __future__ import annotations

import math
from typing import Literal

Kind = Literal["int64", "float64", "str"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def convert(value: object, kind: Kind, name: str = "value") -> tuple[object | None, str | None]:
    """``(converted, None)``, or ``(None, reason)`` when ``value`` is not a ``kind``.

    Absent or blank values are ``(None, None)``: missing is not damaged.
    """
    # The usual case, a parsed header card already of the column's type (same result
    # as the general path below, without its checks: it runs for every header value).
    if type(value) is float and kind == "float64" and math.isfinite(value):
        return value, None
    if type(value) is int and kind == "int64" and INT64_MIN <= value <= INT64_MAX:
        return value, None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if kind == "str":
        if isinstance(value, bool):
            return None, f"{name}={value!r} is not text"
        return str(value).strip(), None
    if isinstance(value, bool):
        return None, f"{name}={value!r} is not a number"
    number = _number(value.strip() if isinstance(value, str) else value)
    if number is None:
        return None, f"{name}={_show(value)} is not a number"
    if kind == "float64":
        try:
            result = float(number)
        except OverflowError:
            return None, f"{name}={_show(value)} is out of the float64 range"
        if not math.isfinite(result):
            return None, f"{name}={_show(value)} is not a finite number"
        return result, None
    if isinstance(number, float):
        if not math.isfinite(number) or number != int(number):
            return None, f"{name}={_show(value)} is not an integer"
        number = int(number)
    if not INT64_MIN <= number <= INT64_MAX:
        return None, f"{name}={_show(value)} is out of the 64-bit integer range"
    return number, None


def _number(value: object) -> int | float | None:
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        for parse in (int, lambda t: float(t.replace("D", "E").replace("d", "e"))):
            try:
                return parse(value)
            except (ValueError, OverflowError):
                pass
        return None
    try:  # NumPy scalars and the like
        return float(value) if not hasattr(value, "__index__") else int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
