"""How every benchmark ends: the result's header, its table on stdout, and the result JSON.

Imports talkrt, so a benchmark imports this module after putting the repository on sys.path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _machine import git_commit
from talkrt.fileio import write_text_atomic


def result_header(benchmark: str, machine: dict) -> dict:
    """The keys every result JSON starts with: what ran, when (UTC), at which commit, on which machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **git_commit(),
        "machine": machine,
    }


def cpu_share(value: float | None) -> str:
    """A table cell for an other-processes CPU share (None where /proc could not be read)."""
    return "n/a" if value is None else f"{100 * value:.0f}%"


def results_table(title: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]], caption: str | None = None) -> Table:
    """A results table: ``columns`` are (header, justify) pairs, ``rows`` already-formatted cells."""
    out = Table(title=title, caption=caption)
    for column, justify in columns:
        out.add_column(column, justify=justify)
    for row in rows:
        out.add_row(*row)
    return out


def emit(result: dict, table: Table, json_path: Path | None, *, width: int, lines: Iterable[str] = ()) -> None:
    """Print the table and the lines after it on stdout, then write ``result`` to ``json_path`` (when given).

    The console is at least ``width`` columns wide so that a file or pipe gets the whole table, unwrapped;
    the JSON is written atomically so that a reader never sees half a result.
    """
    out = Console(width=max(Console().width, width))
    out.print(table)
    for line in lines:
        out.print(line)
    if json_path:
        write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
        out.print(f"wrote {json_path}")
