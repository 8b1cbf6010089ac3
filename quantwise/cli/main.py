"""Entry point: a click group whose commands live one module per concern."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import QuantwiseError
from .bench_cmd import bench_command
from .calibrate_cmd import calibrate_command, validate_command
from .eval_cmd import eval_command, inspect_command
from .export_cmd import export_command
from .formats_cmd import formats_command
from .hardware_cmd import assumptions_command, engines_command, hardware_command, models_command
from .plan_cmd import plan_command, recommend_command
from .quantize_cmd import data_group, quantize_command
from .sensitivity_cmd import sensitivity_command


class _OneLineErrors(click.Group):
    """Bad input ends with one clear line and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (QuantwiseError, ValueError, OSError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is saved; run the same command again to resume", err=True)
            sys.exit(130)


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
