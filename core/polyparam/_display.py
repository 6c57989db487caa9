"""Text shown in a terminal or a notebook exactly as it is: never read as markup, control characters escaped.

Tensor names, metadata and plugin errors come from files and third-party code. Shown as
rich markup, ``[/x]`` raises and ``[bold]x`` shows ``x``; written raw, ``\\x1b[2J`` clears the
screen. Every such string goes through :func:`literal` (a rich ``Text``, which rich never parses)
or :func:`visible` (plain text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["literal", "visible"]


def visible(text: object) -> str:
    """``str(text)`` with each non-printable character (controls, bidi overrides, line separators) escaped.

    Escapes are Python's (``\\x1b``, ``\\n``, ``\\u202e``); spaces and every printable character stay.
    """
    string = str(text)
    if string.isprintable():
        return string
    return "".join(char if char.isprintable() or char == " " else char.encode("unicode_escape").decode("ascii")
                   for char in string)


def literal(text: object) -> Text:
    """A :class:`rich.text.Text` showing :func:`visible` ``(text)``, with no markup or emoji codes read."""
    from rich.text import Text

    return Text(visible(text))
