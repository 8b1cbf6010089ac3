"""Entry point: a click group whose commands live one module per concern."""

from __future__ import annotations

import os
import sys
import warnings

import click
from safetensors import SafetensorError

from .. import __version__
from ..errors import QuantwiseError, TextWarning
from .bench_cmd import bench_command
from .calibrate_cmd import calibrate_command, validate_command
from .eval_cmd import eval_command, inspect_command
from .export_cmd import export_command
from .formats_cmd import formats_command
from .hardware_cmd import assumptions_command, engines_command, hardware_command, models_command
from .plan_cmd import plan_command, recommend_command
from .quantize_cmd import data_group, quantize_command
from .sensitivity_cmd import sensitivity_command


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """quantwise's own warnings as one 'warning:' line on stderr; others as Python shows them."""
    if issubclass(category, TextWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


# Commands whose finished work survives an interruption, and what to tell the user then.
_ON_INTERRUPT = {
    "quantize": "interrupted: finished blocks are saved; run the same command again to resume",
    "data": "interrupted: finished downloads are kept; run the same command again to continue",
}


class _OneLineErrors(click.Group):
    """Bad input ends with one clear line and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_closed_pipe()
        except (QuantwiseError, ValueError, OSError, KeyError, SafetensorError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            command = ctx.invoked_subcommand or ""
            click.echo(_ON_INTERRUPT.get(command, f"interrupted: {command or 'quantwise'} stopped; nothing to resume "
                                                  "(it keeps no partial results)"), err=True)
            sys.exit(130)


def _quiet_closed_pipe() -> None:
    """The reader of our output went away (`quantwise ... | head`): stop without a word, as cat does.
    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, the status a shell reports for a process killed by a closed pipe


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="quantwise")
def cli() -> None:
    """quantwise: which precision, which quantization method, on which GPUs."""


for command in (recommend_command, plan_command, hardware_command, models_command, assumptions_command, engines_command,
                formats_command, quantize_command, export_command, data_group, eval_command, inspect_command,
                bench_command, sensitivity_command, validate_command, calibrate_command):
    cli.add_command(command)


def main() -> None:
    cli()
