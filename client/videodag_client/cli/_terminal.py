"""Text from a server (or from another caller, through it) made safe to print on a terminal.

File names, pipeline ids and descriptions, error messages and job ids come from whoever
submitted or serves them. Printed raw, an escape sequence in one can retitle or clear the
user's terminal, recolour what follows or hide a line; a newline or carriage return can forge
one; a bidi override, an invisible character or a direction mark can make one id or file name
look like another (`invoice\\u202efdp.exe` reads as `invoiceexe.pdf`). These characters are shown
escaped instead, as Python writes them (`\\x1b`, `\\r`, `\\u202e`).

JSON Lines results (`-o -`, which may be a terminal) keep non-ASCII letters readable: with
`ensure_ascii` off, JSON's encoder escapes only the C0 controls, and `json_terminal_safe` escapes
the others as `\\uXXXX`. `--json` output is ASCII throughout, as the encoder's default writes it.

A command line to paste into a shell, with a server's word in it, is `shell_command`'s: quoted,
a job id `x;rm -rf ~` is one argument, not a second command.
"""

from __future__ import annotations

import json
import re
import shlex

# Bidi embeddings, overrides and isolates, direction marks (the Arabic letter mark too), the
# zero-width space and word joiner, the byte order mark, and the line and paragraph separators (a
# new line in some terminals, a JavaScript string's end): they print nothing, or reorder what
# does. The zero-width (non-)joiners stay: Persian words and emoji sequences are spelled with them.
# Also the rest of Unicode's default-ignorable characters that print nothing: the soft hyphen,
# the combining grapheme joiner, the Hangul fillers, the invisible operators, the deprecated
# format characters, and unassigned ones of those blocks. Not the tags and the variation
# selectors: a flag of England and Japanese names' variant kanji (葛󠄀) are spelled with them.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u206f"
    "\u3164\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
)
# C0 controls but tab and newline, DEL and the C1 controls (0x9b starts a sequence as ESC [ does).
_CONTROLS = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")
_CONTROLS_AND_NEWLINE = re.compile(rf"[\x00-\x08\x0a-\x1f\x7f-\x9f{_INVISIBLE}]")
# What JSON's encoder leaves raw with ensure_ascii=False: the C0 controls it escapes itself.
_RAW_IN_JSON = re.compile(rf"[\x7f-\x9f{_INVISIBLE}]")


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters escaped; `one_line` escapes newlines too, for text
    that must not be able to add a line (an error message after "error: ")."""
    pattern = _CONTROLS_AND_NEWLINE if one_line else _CONTROLS
    return pattern.sub(lambda found: _escaped(found.group()), text)


def _escaped(character: str) -> str:
    """As Python writes it (`\\x1b`, `\\u202e`); a filler Python counts as printable (U+3164) by its code."""
    shown = repr(character)[1:-1]
    if shown != character:
        return shown
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def json_terminal_safe(json_text: str) -> str:
    """`json_text` (as `json.dumps(..., ensure_ascii=False)` writes it) with DEL, the C1 controls
    and the invisible characters above escaped as `\\uXXXX`, as `ensure_ascii` would: the same
    value when parsed, but nothing a terminal obeys. Outside strings JSON text is ASCII with no
    such character, so each one found is inside a string, where `\\uXXXX` stands for it."""
    return _RAW_IN_JSON.sub(lambda found: json.dumps(found.group())[1:-1], json_text)  # a tag: a surrogate pair


def shell_command(*words: str) -> str:
    """`words` as a command line to paste into a POSIX shell: each quoted where it needs to be,
    and terminal-safe. A server's word (a job id) stays one argument and runs nothing."""
    return " ".join(shlex.quote(terminal_safe(word, one_line=True)) for word in words)
