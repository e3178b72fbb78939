"""ShoalGroup: the root `shoal` group's argument handling (issue 16 point 5).

- Global options after the subcommand: `shoal status --cluster A --timeout 2` means
  `shoal --cluster A --timeout 2 status`. The options are moved in front of the
  subcommand unless the subcommand has an option of the same name (`shoal up --timeout`
  is its own wait), so no command changes meaning.
- Usage errors (`--shards 0`, an unknown option) are one `error: ...` line on stderr and
  exit code 2, like every other error (_common.fail), never a boxed panel; help (`-h`,
  no arguments) still prints as usual.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from shoal.client.cli._common import one_line

HOISTED_OPTIONS = ("--cluster", "--timeout", "--token", "--token-file")
USAGE_ERROR_EXIT_CODE = 2       # click's convention for usage errors


class ShoalGroup(TyperGroup):
    """The root group: hoists global options, prints usage errors in one line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.hoist_global_options(ctx, args))

    def hoist_global_options(self, ctx: Any, args: Sequence[str]) -> list[str]:
        """Move --cluster/--timeout (and their values) found after the subcommand to the front."""
        path: list[Any] = []
        command: Any = self
        index = 0
        while index < len(args):
            token = args[index]
            if token == "--":
                break
            if token.startswith("-"):
                index += 2 if token in HOISTED_OPTIONS and not path else 1
                continue
            if not hasattr(command, "get_command"):
                break
            found = command.get_command(ctx, token)
            if found is None:
                break
            path.append(index)
            command = found
            index += 1
            if not hasattr(command, "get_command"):
                break
        if not path:
            return list(args)
        own = {name for param in getattr(command, "params", []) for name in (*param.opts, *param.secondary_opts)}
        movable = [name for name in HOISTED_OPTIONS if name not in own]
        front: list[str] = []
        rest: list[str] = list(args[:path[0]])
        tail = list(args[path[0]:])
        position = 0
        while position < len(tail):
            token = tail[position]
            if token == "--":
                rest.extend(tail[position:])
                break
            name = token.split("=", 1)[0]
            if name in movable:
                width = 1 if "=" in token else 2
                front.extend(tail[position:position + width])
                position += width
                continue
            rest.append(token)
            position += 1
        return front + rest

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as exc:
            if not _is_click_exception(exc):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()          # type: ignore[attr-defined]
                sys.exit(exc.exit_code)   # type: ignore[attr-defined]
            sys.exit(_usage_error(exc))
        sys.exit(result if isinstance(result, int) else 0)


def _is_click_exception(exc: BaseException) -> bool:
    return any(base.__name__ == "ClickException" for base in type(exc).__mro__)


def _usage_error(exc: Any) -> int:
    """Print a click error as one line (with the command's --help to read) and return its exit code."""
    message = one_line(exc.format_message())
    context = getattr(exc, "ctx", None)
    hint = f" (see {context.command_path} --help)" if context is not None and exc.exit_code == 2 else ""
    typer.echo(f"error: {message}{hint}", err=True)
    code: int = exc.exit_code
    return code if code else USAGE_ERROR_EXIT_CODE
