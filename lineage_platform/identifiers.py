"""Identifiers people read on a screen (contributor, model, account ids): one form, nothing hidden.

    name = identifier("alice", "contributor id")     # NFC form, or IdentifierError with one line
    problem("p\u0430ypal")      # "mixes Latin and Cyrillic letters (look-alike)"

The rules, the same wherever an id enters (usage ingestion, account names, record contributors):
- the id is compared and stored in Unicode NFC, so two spellings of "é" are one account;
- control characters (Cc), format characters (Cf: bidi overrides such as U+202E, zero-width
  spaces and joiners, the BOM, ...) and line/paragraph separators are **refused**: they change
  what a screen shows without being seen;
- letters of more than one of the scripts that share look-alike glyphs (Latin, Greek, Cyrillic)
  in one id are **refused**, not shown escaped: "pаypal" with a Cyrillic "а" cannot pose as a
  Latin name. One script alone (ελένη, иван, 张伟, Zoë) is fine, and so are digits and symbols.

Pure: no I/O. `arrow_problems` applies the same rules to an Arrow column (only its non-ASCII
values go through Python, so a large all-ASCII batch costs one regex pass).
"""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

from lineage_platform.errors import IdentifierError

CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _script(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for script in CONFUSABLE_SCRIPTS:
        if name.startswith(script + " "):
            return script
    return None


def problem(text: str) -> str | None:
    """Why `text` (taken as NFC) is not an acceptable identifier, or None when it is."""
    if not text:
        return "is empty"
    normal = unicodedata.normalize("NFC", text)
    scripts: set[str] = set()
    for ch in normal:
        category = unicodedata.category(ch)
        if category in _HIDDEN:
            what = "a format or bidi character" if category == "Cf" else "a hidden character"
            return f"has {what} (U+{ord(ch):04X})"
        script = _script(ch)
        if script is not None:
            scripts.add(script)
    if len(scripts) > 1:
        names = " and ".join(s.title() for s in CONFUSABLE_SCRIPTS if s in scripts)
        return f"mixes {names} letters (look-alike)"
    return None


def identifier(text: object, what: str) -> str:
    """`text` in NFC, or `IdentifierError("<what> ...: <rule>")`."""
    if not isinstance(text, str):
        raise IdentifierError(f"{what}: expected text, got {type(text).__name__}")
    why = problem(text)
    if why is not None:
        raise IdentifierError(f"{what} {ascii(text)[:60]} {why}")
    return unicodedata.normalize("NFC", text)


def is_nfc(text: str) -> bool:
    return unicodedata.is_normalized("NFC", text)


def arrow_problems(col: pa.Array) -> tuple[pa.Array, dict[str, str]]:
    """(mask of refused rows, reason per refused value) for a string column without nulls."""
    non_ascii = pc.match_substring_regex(col, r"[^\x00-\x7f]")
    if not pc.any(non_ascii).as_py():
        return non_ascii, {}
    distinct = pc.unique(pc.filter(col, non_ascii)).to_pylist()
    reasons = {v: why for v in distinct if (why := problem(v)) is not None}
    if not reasons:
        return pc.and_(non_ascii, False), {}
    mask = pc.is_in(col, value_set=pa.array(list(reasons), pa.string()))
    return pc.fill_null(mask, False), reasons


def arrow_nfc(col: pa.Array) -> pa.Array:
    """The column in NFC (unchanged, without a copy, when it is all ASCII or all NFC already).

    Arrow's own `utf8_normalize` is a no-op in some builds, so the distinct non-ASCII values go
    through `unicodedata` and are mapped back in bulk."""
    non_ascii = pc.fill_null(pc.match_substring_regex(col, r"[^\x00-\x7f]"), False)
    if not pc.any(non_ascii).as_py():
        return col
    distinct = pc.unique(pc.filter(col, non_ascii)).to_pylist()
    changed = {v: unicodedata.normalize("NFC", v) for v in distinct
               if v is not None and not is_nfc(v)}
    if not changed:
        return col
    position = pc.index_in(col, value_set=pa.array(list(changed), pa.string()))
    return pc.coalesce(pc.take(pa.array(list(changed.values()), pa.string()), position), col)
