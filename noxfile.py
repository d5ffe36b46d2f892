"""Nox sessions: ``nox`` runs the tests on every installed Python and the linters.

nox -s tests-3.12 -- -k status     # one Python, arguments passed to pytest
nox -s lint
"""

import shutil

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
# Versions listed in pyproject.toml that this machine may not have yet; they run
# where installed and are left out elsewhere. The others must exist: under CI=true
# nox fails on a missing interpreter.
NOT_YET_EVERYWHERE = {"3.14"}

nox.options.reuse_venv = "yes"


def available(versions):
    """Return the versions to run: all required ones, and the optional ones found here."""
    return [v for v in versions if v not in NOT_YET_EVERYWHERE or shutil.which(f"python{v}")]


@nox.session(python=available(PYTHON_VERSIONS))
def tests(session):
    """Run the test suite."""
    session.install("-e", ".[postgres,mysql]", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def lint(session):
    """Check style and formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
def bench(session):
    """Benchmark db.populate against plain sqlite3 executemany (slow: minutes)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/populate.py", *session.posargs)
