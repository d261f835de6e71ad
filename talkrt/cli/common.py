"""What every command shares: the app, the consoles, one-line errors, printing as-is, shared options."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from talkrt.errors import TalkrtError, TalkrtWarning


class App(typer.Typer):
    """A Typer app whose commands end a user's mistake in one line (:func:`user_errors`)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)
        return lambda func: register(user_errors(func))


app = App(name="talkrt", help="Export, build and run talking-head models as TensorRT engines.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console()
errors = Console(stderr=True)
_state = {"debug": False}

TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow arbitrary unpickling for files that hold more than tensors. Only for files you trust.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for random weights or sampling noise.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Frames rendered per batch.")]
SkipUnknownOpt = Annotated[bool, typer.Option("--skip-unknown", help="Drop symbols the voice has no id for (they are refused otherwise).")]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: it unwinds like Ctrl-C, so temporary files are removed."""


def _show_warning(show, message, category, filename, lineno, file=None, line=None) -> None:
    """A TalkrtWarning is one `warning:` line on stderr; other warnings go to `show`."""
    if issubclass(category, TalkrtWarning):
        errors.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}", highlight=False, soft_wrap=True)
    else:
        show(message, category, filename, lineno, file, line)


def user_errors(func: Callable) -> Callable:
    """Turn TalkrtError into one line and an exit code; unexpected errors into one line too, unless --debug."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            errors.print("[red]terminated[/]" if terminated else "[red]interrupted[/]")
            raise typer.Exit(143 if terminated else 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            mistake = isinstance(exc, TalkrtError)
            text = escape(str(exc)) if mistake else f"{type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)"
            errors.print(f"[bold red]{'error' if mistake else 'internal error'}:[/] {text}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code if mistake else 1) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False) -> None:
    _state["debug"] = debug


def say(text: str, prefix: str = "", style: str = "") -> None:
    """Print ``text`` as it is (paths and hints may hold brackets, which rich reads as markup) after ``prefix`` (markup)."""
    console.print(prefix + escape(text), style=style, highlight=False)


def wrote(text: str) -> None:
    say(text, prefix="[green]wrote[/] ")


def note(text: str) -> None:
    """A library's remark (the device chosen, the time TTS took), dim; warnings come as TalkrtWarning."""
    say(text, style="dim")


def _command(func: Callable, call: Callable, parameters: list[inspect.Parameter], name: str | None = None, doc: str | None = None) -> Callable:
    """A command that Typer reads as taking ``parameters`` and that runs ``call`` with them."""

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        return call(**kwargs)

    command.__signature__ = inspect.signature(func, eval_str=True).replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    if name:
        command.__name__, command.__doc__ = name.replace("-", "_"), doc
    return command


def variant(func: Callable, name: str, doc: str, keep: Optional[list[str]] = None, annotations: Optional[dict] = None, **defaults: Any) -> Callable:
    """``func`` under another signature: only the parameters in ``keep`` (the others take their defaults),
    some with other ``annotations`` or ``defaults``. Commands that differ only so share one function."""
    annotations = annotations or {}
    parameters = [
        p.replace(default=defaults.get(p.name, p.default), annotation=annotations.get(p.name, p.annotation))
        for p in inspect.signature(func, eval_str=True).parameters.values()
        if keep is None or p.name in keep
    ]
    return _command(func, func, parameters, name, doc)


def with_group(group: Callable, as_name: str, files: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """An option group, as Polygraphy's argument groups: the command takes ``group``'s options after its own and gets what
    ``group`` makes of them as its parameter ``as_name``. ``files`` spells out ``group``'s ``**kwargs`` as ``--NAME PATH`` options."""
    shared = [p for p in inspect.signature(group, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD] + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], typer.Option(f"--{name}", help=help)])
        for name, help in (files or {}).items()
    ]

    def decorate(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != as_name]
        parameters = [p.replace(kind=p.KEYWORD_ONLY) for p in sorted([*own, *shared], key=lambda p: p.default is not p.empty)]

        def call(**kwargs: Any) -> Any:
            made = group(**{p.name: kwargs.pop(p.name) for p in shared})
            return func(**kwargs, **{as_name: made})

        return _command(func, call, parameters)

    return decorate
