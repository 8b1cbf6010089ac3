"""Running the CLI in-process and checking that a failure is one clear line."""

from __future__ import annotations

from click.testing import CliRunner

from quantwise.cli.main import cli


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def one_line_error(result, *words):
    """Exit 2, no traceback, exactly one 'error:' line, containing each of `words`."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
