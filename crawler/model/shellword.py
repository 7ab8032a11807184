"""A path as one word of a command line that a user pastes into a shell."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


def shell_word(path: Path | str) -> str:
    """``path`` quoted as one shell word. A name whose bytes are not UTF-8 (held as lone
    surrogates) is written in ``$'...'`` with ``\\xNN`` escapes, which give the shell
    those bytes back (bash, zsh, ksh; POSIX sh from its 2024 edition): quoted as text,
    it showed ``\\udcff``, and the command pasted looked for a file of another name."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "$'" + "".join(chr(byte) if 0x20 <= byte < 0x7F and byte not in b"'\\"
                              else f"\\x{byte:02x}" for byte in os.fsencode(text)) + "'"
    return shlex.quote(text)
