"""Split a documented shell block into commands and the output shown under each.

A command is one or more lines (a trailing backslash, an open quote or a heredoc carry
it on); the `# …` lines right after it are its documented output. A `#` line after a
blank line, or at the top, is a plain comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


@dataclass
class Command:
    text: str
    line: int  # 0-based line inside the block
    output: list[str]


def _open_quote(text: str) -> bool:
    """Whether `text` ends inside a single- or double-quoted string."""
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and not quote:
            break
    return bool(quote)


def split(block: str) -> list[Command]:
    commands: list[Command] = []
    lines = block.splitlines()
    i = 0
    after_command = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            after_command = False
            i += 1
            continue
        if stripped.startswith("#"):
            if after_command:
                commands[-1].output.append(re.sub(r"^#( |$)", "", stripped, count=1) if stripped != "#" else "")
            i += 1
            continue
        start, text = i, [line]
        heredoc = _HEREDOC.search(line)
        while True:
            joined = "\n".join(text)
            if heredoc and i + 1 < len(lines):
                i += 1
                text.append(lines[i])
                if lines[i].strip() == heredoc.group(1):
                    heredoc = None
                continue
            if (joined.endswith("\\") or _open_quote(joined)) and i + 1 < len(lines):
                i += 1
                text.append(lines[i])
                heredoc = heredoc or _HEREDOC.search(lines[i])
                continue
            break
        commands.append(Command("\n".join(text), start, []))
        after_command = True
        i += 1
    return commands
