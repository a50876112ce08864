"""Rich tables that fit the terminal without cutting a number: the columns that fit, or all.

A table is a list of :class:`Col` (header, kind, priority) and rows of cells. A cell is a string
or a tuple of segments that may go on separate lines (``("0.401 -> 0.402", "(+0.001)")``).
Strings print as they are: titles, headers and cells are escaped here, so a category named
``sign [/]`` or a path holding ``[x]`` is neither a crash nor lost text; a segment wrapped in
:class:`Markup` is rich markup, printed styled (``Markup("[bold red]RANDOM[/]")``).
:func:`fit_table` keeps every essential column (``keep=0``), then the optional ones in order of
``keep`` while they fit in ``width``; it then narrows what may be narrowed, never a number:
segmented cells put their segments on separate lines, names (``kind="name"``) fold over several
lines as a last resort. Column widths are set
explicitly, so rich never ellipsises a cell. ``width=None`` (``--wide``) keeps every column at
its full width, however wide the table gets (printed uncropped).

:func:`print_table` prints the table and, when columns were left out, one line saying how many,
how to see them (``--wide``) and where the full table is saved.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["Cell", "Col", "Markup", "add_wide_option", "fit_table", "pointer", "print_table"]

Cell = str | tuple[str, ...]
NAME_MIN = 12  # a name column is folded no narrower than this (or its header's longest word)


class Markup(str):
    """A title, header or cell segment written in rich markup (any other string is plain text)."""


def _markup(text: str) -> str:
    """``text`` as rich markup: plain text escaped, :class:`Markup` as it is."""
    return text if isinstance(text, Markup) else escape(text)


@dataclass(frozen=True)
class Col:
    """A column: ``kind`` ``name`` (left, folds when it must), ``text`` (left, never cut) or
    ``number`` (right, never cut); ``keep`` 0 = always shown, else optional, lower kept first."""

    header: str
    kind: str = "number"
    keep: int = 0


def add_wide_option(parser: argparse.ArgumentParser) -> None:
    """``--wide``: every column, however wide the terminal."""
    parser.add_argument(
        "--wide", action="store_true",
        help="print every column of the table, wider than the terminal if need be",
    )  # fmt: skip


def _len(text: str) -> int:
    return max((Text.from_markup(line).cell_len for line in text.split("\n")), default=0)


def _segments(cell: Cell) -> tuple[str, ...]:
    """The cell's segments as rich markup (what is measured, packed and printed)."""
    return tuple(_markup(s) for s in ((cell,) if isinstance(cell, str) else cell))


def _widths(col: Col, cells: list[Cell]) -> tuple[int, int]:
    """(natural, minimum) width of a column's content, padding and borders excluded."""
    natural = max([_len(_markup(col.header))] + [_len(" ".join(_segments(c))) for c in cells])
    word = max(len(w) for w in col.header.split() or [""])
    if col.kind == "text":
        return natural, natural
    if col.kind == "name":
        return natural, max(word, min(natural, NAME_MIN))
    longest = max([0] + [_len(s) for c in cells for s in _segments(c)])
    return natural, max(word, longest)


def _total(widths: Sequence[int]) -> int:
    """Width of a rich table (default box, padding 1) with columns of these content widths."""
    return sum(widths) + 3 * len(widths) + 1


def _pack(segments: tuple[str, ...], width: int) -> str:
    """Segments joined by spaces, a new line wherever the next one would not fit."""
    lines: list[str] = []
    for seg in segments:
        if lines and _len(lines[-1] + " " + seg) <= width:
            lines[-1] += " " + seg
        else:
            lines.append(seg)
    return "\n".join(lines)


def _squeeze(cols: list[Col], natural: list[int], minimum: list[int], room: int) -> list[int]:
    """Widths within ``room`` (the table's width): segmented columns first (to their minimum,
    most saved first), then names (one character at a time, widest first)."""
    widths = list(natural)
    order = sorted(range(len(cols)), key=lambda i: minimum[i] - natural[i])
    for i in order:
        if _total(widths) <= room:
            return widths
        if cols[i].kind == "number":
            widths[i] = minimum[i]
    names = [i for i, c in enumerate(cols) if c.kind == "name"]
    while _total(widths) > room:
        shrinkable = [i for i in names if widths[i] > minimum[i]]
        if not shrinkable:
            break  # even the minimum does not fit: the table runs past the terminal
        widest = max(shrinkable, key=lambda i: widths[i] - minimum[i])
        widths[widest] -= 1
    return widths


def fit_table(
    title: str, cols: Sequence[Col], rows: Sequence[Sequence[Cell]], *, width: int | None
) -> tuple[Table, list[str]]:
    """The table at ``width`` terminal columns (``None``: every column, full width) and the
    headers of the columns left out."""
    columns = [[row[i] for row in rows] for i in range(len(cols))]
    measured = [_widths(c, cells) for c, cells in zip(cols, columns)]
    natural = [n for n, _ in measured]
    minimum = [m for _, m in measured]
    shown = list(range(len(cols)))
    if width is not None:
        essential = [i for i, c in enumerate(cols) if c.keep == 0]
        # optional columns must fit beside the essential ones at full width, else with numbers
        # on several lines but names whole: they never fold a name
        unfolded = [n if c.kind == "name" else m for c, n, m in zip(cols, natural, minimum)]
        sizes = natural if _total([natural[i] for i in essential]) <= width else unfolded
        shown = essential
        for i in sorted((i for i, c in enumerate(cols) if c.keep), key=lambda i: cols[i].keep):
            if _total([sizes[j] for j in shown + [i]]) > width:
                break
            shown = shown + [i]
        shown.sort()
    kept = [cols[i] for i in shown]
    widths = [natural[i] for i in shown]
    if width is not None:
        widths = _squeeze(kept, widths, [minimum[i] for i in shown], width)
    table = Table(title=_markup(title), width=_total(widths))
    for col, w in zip(kept, widths):
        right = col.kind == "number"
        table.add_column(_markup(col.header), justify="right" if right else "left", width=w,
                         overflow="fold", no_wrap=col.kind == "text")  # fmt: skip
    for row in rows:
        table.add_row(*(_pack(_segments(row[i]), w) for i, w in zip(shown, widths)))
    return table, [c.header for i, c in enumerate(cols) if i not in shown]


def pointer(left_out: int, width: int, full: str | os.PathLike | None = None) -> str:
    """The line under a table that lost columns to the terminal's width."""
    what = f"{left_out} column{'s' * (left_out != 1)} left out at {width} columns; --wide for all"
    return what + (f", full table in {full}" if full is not None else "")


def print_table(
    console: Console,
    title: str,
    cols: Sequence[Col],
    rows: Sequence[Sequence[Cell]],
    *,
    wide: bool = False,
    full: str | os.PathLike | None = None,
) -> list[str]:
    """Print the table fitted to ``console`` (every column when ``wide``) and, when columns
    were left out, the line saying so; returns their headers."""
    table, left_out = fit_table(title, cols, rows, width=None if wide else console.width)
    console.print(table, crop=False)
    if left_out:
        console.print(
            pointer(len(left_out), console.width, full), markup=False, highlight=False,
            soft_wrap=True,
        )  # fmt: skip
    return left_out
