"""The `talkrt` command line: parse, call the library, print with rich (commands in the modules beside)."""

import signal
from typing import Optional

import typer
from rich.markup import escape

from talkrt.cli.common import Terminated, app, errors
from talkrt.cli import graphs, run  # noqa: F401  (each registers its commands)


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[list[str]] = None) -> int:
    """The console entry point: usage mistakes (a value out of range, an unknown option) are one line and exit 2, like every other mistake; SIGTERM cleans up as Ctrl-C does."""
    # click's UsageError (BadParameter's base), whether typer vendors click or not
    usage_error = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=argv, standalone_mode=False)
    except usage_error as exc:
        command = exc.ctx.command_path if exc.ctx else "talkrt"
        errors.print(f"[bold red]error:[/] {escape(exc.format_message())} (see `{escape(command)} --help`)", highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:  # Ctrl-C or SIGTERM outside a command (while parsing)
        errors.print("[red]interrupted[/]")
        return 130
    return code if isinstance(code, int) else 0
