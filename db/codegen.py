"""Python calls written as source the way ruff format lays them out, for generated files.

    call = Call("pw.CharField(", ["max_length=7", Call("constraints=[", ['pw.SQL("X")'], "]")])
    lines = call.lines(indent=8, prefix="name = ")   # one line if it fits in LINE_LENGTH

A call that does not fit on one line puts its arguments on the next line, one level
deeper; if they do not fit there either, one argument per line with a trailing comma,
each laid out the same way.
"""

from dataclasses import dataclass

LINE_LENGTH = 100  # pyproject.toml's [tool.ruff] line-length
INDENT = 4


@dataclass
class Call:
    """``opening`` (e.g. ``"f("``), its arguments (text or Calls), ``closing``."""

    opening: str
    arguments: list
    closing: str = ")"

    def flat(self):
        return self.opening + ", ".join(map(_flat, self.arguments)) + self.closing

    def lines(self, indent=0, prefix="", suffix=""):
        """Return the call's source lines, ``prefix`` before it and ``suffix`` after."""
        pad = " " * indent
        one_line = f"{pad}{prefix}{self.flat()}{suffix}"
        if len(one_line) <= LINE_LENGTH or not self.arguments:
            return [one_line]
        first, last = f"{pad}{prefix}{self.opening}", f"{pad}{self.closing}{suffix}"
        inner = " " * (indent + INDENT) + ", ".join(map(_flat, self.arguments))
        if len(inner) <= LINE_LENGTH:
            return [first, inner, last]
        body = [line for a in self.arguments for line in _lines(a, indent + INDENT, ",")]
        return [first, *body, last]


def _flat(argument):
    return argument.flat() if isinstance(argument, Call) else argument


def _lines(argument, indent, suffix):
    if isinstance(argument, Call):
        return argument.lines(indent, suffix=suffix)
    return [" " * indent + argument + suffix]
