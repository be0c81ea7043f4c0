"""How the CLI shows answers: rich tables, key/value panels, JSON, job progress."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def show_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def show_table(items: list[dict[str, Any]], columns: list[str], title: str | None = None,
               total: int | None = None) -> None:
    """One row per item; columns absent from every item are left out."""
    present = [c for c in columns if any(c in i for i in items)] or columns
    table = Table(title=title, header_style="bold")
    for col in present:
        table.add_column(col)
    for item in items:
        table.add_row(*(_cell(item.get(c)) for c in present))
    console.print(table)
    shown = f"{len(items)} shown" + (f" of {total}" if total is not None else "")
    errors.print(f"[dim]{shown}[/dim]")


def show_item(item: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in item.items():
        table.add_row(key, _cell(value))
    console.print(table)


@contextmanager
def job_progress(enabled: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A live progress bar fed with job dicts (stage and percent), on stderr."""
    if not enabled:
        yield lambda job: None
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                        console=errors, transient=False)
    with progress:
        task = progress.add_task("job", total=100, stage="")

        def update(job: dict[str, Any]) -> None:
            state = job.get("state", "")
            percent = job.get("percent")
            done = 100 if state == "succeeded" else percent
            progress.update(task, description=f"{job.get('kind') or 'job'} {state}",
                            completed=float(done or 0), stage=job.get("stage") or "")
        yield update
