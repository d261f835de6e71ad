"""TensorRT's build progress as rich progress bars (the builder's progress monitor protocol)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class RichBuildProgress:
    """One bar per build phase, nested phases indented."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}  # phase -> task id

    def phase_start(self, name: str, parent: str | None, num_steps: int) -> None:
        self.tasks[name] = self.progress.add_task(("  " if parent else "") + name, total=max(num_steps, 1))

    def step_complete(self, name: str, step: int) -> None:
        if name in self.tasks:
            self.progress.update(self.tasks[name], completed=step + 1)

    def phase_finish(self, name: str) -> None:
        if name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name))


@contextlib.contextmanager
def build_progress(console) -> Iterator[RichBuildProgress]:
    """Bars on ``console`` for the duration of one build, gone afterwards."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True) as bars:
        yield RichBuildProgress(bars)
