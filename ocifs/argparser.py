"""An argparse parser whose usage errors are one line naming the argument and the problem.

argparse's own errors print the whole usage block (eight lines for `ocifs
mount`) and then internal wording (`argument command: invalid choice: 'mont'
(choose from ...)`, `invalid int value: 'x'`, `unrecognized arguments`). Users
of `ocifs` get one line instead, in the README's form `PROG: what: problem`,
ending with where to read more. Exit status 2, as for every usage error.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_USAGE = 2

# patterns, compiled (by `re`'s cache) only when an error is explained: every `ocifs`
# start imports this module
_ARGUMENT = r"argument (?P<name>[^:]+): (?P<problem>.*)"
_CHOICE = r"invalid choice: '(?P<value>[^']*)'"
_TYPE_VALUE = r"invalid \S+ value: (?P<value>.*)"


class OneLineParser(argparse.ArgumentParser):
    """`error()` prints one line; subparsers made by `add_subparsers` are of this class too."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an argument nothing took is blamed on the subcommand it was
        given to (`ocifs mount: unknown option --bogus`), not on `ocifs`."""
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._chosen_subcommand(parsed).unrecognized(extras)
        return parsed

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {self._explain(message)}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Arguments no option took: `parse_known_args` leftovers, named by this subcommand."""
        options = [a for a in extras if a.startswith("-") and a != "-"]
        if options:
            self.error(f"unknown option {options[0]}")
        self.error(f"unexpected argument {extras[0]!r}")

    def _explain(self, message: str) -> str:
        if message.startswith("the following arguments are required: "):
            missing = message.split(": ", 1)[1]
            if missing.lower() == "command":
                # `ocifs --bogus`: argparse reports the missing command, not the option
                unknown = [a for a in getattr(self, "_given", []) if a.startswith("-")]
                if unknown:
                    return f"unknown option {unknown[0]} (commands: {self._commands()})"
                return f"no command given (one of {self._commands()})"
            return f"missing {missing}"
        m = re.fullmatch(_ARGUMENT, message, re.DOTALL)
        if m is None:
            return message
        name, problem = m.group("name"), m.group("problem")
        choice = re.match(_CHOICE, problem)
        if name.lower() == "command" and choice:
            return self._unknown_command(choice.group("value"))
        if problem == "expected one argument":
            return f"{_short(name)} needs a value"
        typed = re.fullmatch(_TYPE_VALUE, problem)
        if typed:
            return f"{_short(name)}: invalid value {typed.group('value')}"
        return f"{_short(name)}: {problem}"

    def _commands(self) -> str:
        return ", ".join(self._command_names())

    def _subcommands(self) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def _command_names(self) -> list[str]:
        sub = self._subcommands()
        return [] if sub is None else list(sub.choices)

    def _chosen_subcommand(self, parsed: argparse.Namespace) -> OneLineParser:
        sub = self._subcommands()
        if sub is None or sub.dest is argparse.SUPPRESS:
            return self
        chosen = sub.choices.get(getattr(parsed, sub.dest, None) or "")
        return chosen if isinstance(chosen, OneLineParser) else self

    def _unknown_command(self, word: str) -> str:
        import difflib  # only here: it costs every `ocifs` start ~2 ms otherwise

        close = difflib.get_close_matches(word, self._command_names(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown command {word!r} ({hint}commands: {self._commands()})"


def _short(name: str) -> str:
    """`-j/--jobs` → `--jobs`: the spelling users type most."""
    return name.split("/")[-1]
