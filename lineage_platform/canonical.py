"""RFC 8785 (JCS) canonical JSON, fast enough to run once per record on a hot append path.

    data = canonical_json({"b": [1, 0.5], "a": "x"})  # b'{"a":"x","b":[1,0.5]}'
    obj = loads_strict(data, "payload")  # duplicate keys, NaN, bad UTF-8 -> RecordError

The C `json` encoder already produces RFC 8785 output for everything except two cases: floats
(Python writes `1.0`, `1e-05`, `1e+16`; ECMAScript writes `1`, `0.00001`, `10000000000000000`) and
object keys outside the Basic Multilingual Plane (RFC 8785 sorts keys by UTF-16 code units, Python
by code points). One cheap scan decides: no floats and no such keys means `json.dumps`; integral
floats are rewritten as ints (identical text in both); anything else goes to the `rfc8785` package.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lineage_platform.errors import RecordError

__all__ = ["MAX_SAFE_INT", "canonical_json", "es6_number", "json_string", "loads_strict"]

#: RFC 8785 numbers are IEEE 754 doubles; larger integers would silently lose precision.
MAX_SAFE_INT = 2**53 - 1

_FAST = 0
_INTEGRAL_FLOATS = 1  # integral floats present: rewrite them as ints, then the fast path holds
_SLOW = 2  # a float whose Python repr differs from ECMAScript, or a non-BMP key

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class _Bad(Exception):
    """Internal: carries the JSON path outward so the final message names the field."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _path_text(path: list[str]) -> str:
    return "$" + "".join(reversed(path))


_PLAIN = (str, int, float, bool, dict, list, tuple)


def _scan(obj: object) -> int:
    """Validate `obj` as JSON and say which serializer gives RFC 8785 bytes for it."""
    t = type(obj)
    if t is str or t is bool or obj is None:
        return _FAST
    if t not in _PLAIN:  # subclasses (StrEnum, IntEnum, OrderedDict) encode as their base type
        for base in _PLAIN:
            if isinstance(obj, base):
                t = base
                break
        else:
            raise _Bad(f"{t.__name__} cannot be encoded as JSON")
        if t is str or t is bool:
            return _FAST
    if t is int:
        n: int = obj  # type: ignore[assignment]
        if -MAX_SAFE_INT <= n <= MAX_SAFE_INT:
            return _FAST
        raise _Bad(f"integer {n} is outside the JSON safe range ±(2**53-1)")
    if t is float:
        f: float = obj  # type: ignore[assignment]
        if not math.isfinite(f):
            raise _Bad(f"{f} is not allowed in JSON")
        if f.is_integer():
            return _INTEGRAL_FLOATS if abs(f) <= MAX_SAFE_INT else _SLOW
        # Non-integral and >= 1e-4: Python's shortest repr uses fixed notation, like ECMAScript.
        return _FAST if abs(f) >= 1e-4 else _SLOW
    status = _FAST
    if t is dict:
        d: dict[object, object] = obj  # type: ignore[assignment]
        for k, v in d.items():
            if not isinstance(k, str):
                raise _Bad(f"object key {k!r:.60} is not a string")
            if not k.isascii() and any(ord(c) > 0xFFFF for c in k):
                status = _SLOW
            try:
                s = _scan(v)
            except _Bad as e:
                e.path.append(f".{k:.40}" if k.isidentifier() else f"[{k!r:.40}]")
                raise
            if s > status:
                status = s
        return status
    seq: list[object] | tuple[object, ...] = obj  # type: ignore[assignment]
    for i, v in enumerate(seq):
        try:
            s = _scan(v)
        except _Bad as e:
            e.path.append(f"[{i}]")
            raise
        if s > status:
            status = s
    return status


def _ints_for_integral_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return int(obj) if obj.is_integer() else obj
    if isinstance(obj, dict):
        return {k: _ints_for_integral_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_ints_for_integral_floats(v) for v in obj]
    return obj


def canonical_json(obj: object) -> bytes:
    """RFC 8785 bytes for a JSON value (dict/list/tuple/str/int/float/bool/None).

    Raises RecordError naming the JSON path for NaN/inf, unsafe integers, non-str keys, lone
    surrogates and non-JSON types.
    """
    try:
        status = _scan(obj)
    except _Bad as e:
        raise RecordError(f"{_path_text(e.path)}: {e.problem}") from None
    except RecursionError:
        raise RecordError("$: JSON value is nested too deeply") from None
    if status == _SLOW:
        return _rfc8785_dumps(obj)
    if status == _INTEGRAL_FLOATS:
        obj = _ints_for_integral_floats(obj)
    try:
        return _dumps(obj).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("$: string contains a lone surrogate (not valid UTF-8)") from None


def json_string(s: str) -> str:
    """A JSON string literal with RFC 8785 escaping (the C encoder's; lone surrogates pass)."""
    return _encode_basestring(s)


_encode_basestring = json.encoder.encode_basestring


def es6_number(f: float) -> str:
    """ECMAScript Number::toString of a finite float, as RFC 8785 §3.2.2.3 prescribes.

    Python's repr already gives the shortest round-tripping digits; only the layout differs.
    """
    if not math.isfinite(f):
        raise RecordError(f"$: {f} is not allowed in JSON")
    if f == 0:
        return "0"
    if f < 0:
        return "-" + es6_number(-f)
    mantissa, _, exp = repr(f).partition("e")
    int_part, _, frac = mantissa.partition(".")
    all_digits = int_part + frac
    digits = all_digits.lstrip("0")
    n = len(int_part) + (int(exp) if exp else 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"


def _rfc8785_dumps(obj: object) -> bytes:
    import rfc8785  # only needed for unusual floats and astral-plane keys

    try:
        return rfc8785.dumps(obj)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError as e:
        raise RecordError(f"$: {e}") from None


def _parse_int(text: str) -> int | float:
    # Past 2**53 a JSON number is a double (RFC 8785 §3.2.2.3); keep it one so it re-encodes.
    n = int(text)
    return n if -MAX_SAFE_INT <= n <= MAX_SAFE_INT else float(text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r:.60}")
        out[k] = v
    return out


def loads_strict(data: bytes | str, what: str) -> Any:
    """Parse JSON refusing duplicate keys, NaN/Infinity and invalid UTF-8; errors name `what`."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"{what}: not valid UTF-8 (byte {e.start})") from None
    else:
        text = data
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as e:
        raise RecordError(f"{what}: malformed JSON ({e.msg} at char {e.pos})") from None
    except (ValueError, RecursionError) as e:
        raise RecordError(f"{what}: malformed JSON ({e})") from None
