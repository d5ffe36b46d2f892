"""db.codegen: generated calls are laid out exactly as ruff format would lay them out."""

import pytest

from db.codegen import Call
from tests.test_autogen import run_ruff


def field(*arguments):
    return Call("pw.CharField(", list(arguments))


CASES = {
    "fits on one line": field("max_length=7"),
    "arguments on the next line": field(*(f'name_{i}="{i}"' for i in range(8))),
    "one argument per line": field(
        *(f'argument_{i}="{"x" * 20}"' for i in range(5)),
        Call("constraints=[", [f'pw.SQL("DEFAULT {"y" * 40}")', 'pw.Check("a > 0")'], "]"),
    ),
    "a nested list split too": field(
        "max_length=7", Call("constraints=[", [f'pw.SQL("{"z" * 60}")'] * 3, "]")
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_a_call_is_laid_out_as_ruff_format_does(tmp_path, name):
    source = tmp_path / "generated.py"
    lines = CASES[name].lines(indent=4, prefix="value = ")
    source.write_text("if True:\n" + "\n".join(lines) + "\n")

    checked = run_ruff("format", "--diff", source)

    assert checked.returncode == 0, checked.stdout
