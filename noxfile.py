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
ENGINES = ["sqlite", "postgres", "mysql"]
# The server-bound tests mostly wait on the servers' disks: run them side by side.
PYTEST_WORKERS = "4"

nox.options.reuse_venv = "yes"


def available(versions):
    """Return the versions to run: all required ones, and the optional ones found here."""
    return [v for v in versions if v not in NOT_YET_EVERYWHERE or shutil.which(f"python{v}")]


def install_for_tests(session):
    session.install("-e", ".[postgres,mysql]", *nox.project.dependency_groups(PYPROJECT, "test"))


@nox.session(python=available(PYTHON_VERSIONS))
def tests(session):
    """Run the whole test suite on SQLite, PostgreSQL and MariaDB/MySQL."""
    install_for_tests(session)
    session.run("pytest", "-n", PYTEST_WORKERS, *session.posargs)


@nox.session(default=False)
@nox.parametrize("engine", ENGINES)
def engine(session, engine):
    """Run the engine-parametrized tests on one engine (a missing server skips, or fails on CI)."""
    install_for_tests(session)
    session.run(
        "pytest", "-n", PYTEST_WORKERS, "-m", "engine", *session.posargs,
        env={"CLONEGALLERY_TEST_ENGINES": engine},
    )  # fmt: skip


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
