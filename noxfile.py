"""Nox sessions: ``nox`` runs the tests on every installed Python and the linters.

nox -s tests-3.12 -- -k status     # one Python, arguments passed to pytest
nox -s lint
"""

import os
import shutil

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
# Versions listed in pyproject.toml that this machine may not have yet; they run
# where installed and are left out elsewhere. The others must exist: under CI=true
# nox fails on a missing interpreter.
NOT_YET_EVERYWHERE = {"3.14"}
ENGINES = ["sqlite", "postgres", "mysql"]
# The Python that runs the suite on every engine; the others run it on SQLite. What
# differs between Pythons is our code's and the drivers' behaviour, which SQLite
# exercises whole; the servers behave the same whichever Python talks to them, and
# running them under every Python would take CI past its time budget.
MAIN_PYTHON = "3.11"
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
    """Run the whole test suite: on SQLite, PostgreSQL and MariaDB/MySQL with the main
    Python; on SQLite, less the slow crash and concurrency tests, with the others."""
    install_for_tests(session)
    main = session.python == MAIN_PYTHON
    engines = ",".join(ENGINES if main else ["sqlite"])
    chosen = os.environ.get("CLONEGALLERY_TEST_ENGINES", engines)  # a developer's choice wins
    # The crash and concurrency tests (marked slow) kill and race processes: what they
    # prove is the OS's and the engines' part, the same under every Python.
    only_fast = [] if main else ["-m", "not slow"]
    session.run(
        "pytest", "-n", PYTEST_WORKERS, *only_fast, *session.posargs,
        env={"CLONEGALLERY_TEST_ENGINES": chosen},
    )  # fmt: skip


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


BENCHMARKS = ("populate", "backup", "transfer")
# Each benchmark at a tiny size, its targets unchecked: enough that one cannot break unseen.
SMOKE_SIZES = {
    "populate": ["--images", "2000"],
    "backup": ["--images", "2000", "--pg-images", "2000", "--repeats", "1"],
    "transfer": ["--images", "2000"],
}


@nox.session(default=False)
def bench(session):
    """Benchmark populate, backup/restore and transfer against the engines' own tools
    (slow: minutes). ``nox -s bench -- backup --images 100000`` runs one, with options."""
    session.install("-e", ".[postgres]")
    chosen = [name for name in session.posargs if name in BENCHMARKS]
    options = [arg for arg in session.posargs if arg not in BENCHMARKS]
    for name in chosen or BENCHMARKS:
        session.run("python", f"benchmarks/{name}.py", *options)


@nox.session(name="bench-smoke")
def bench_smoke(session):
    """Run every benchmark at a tiny size, checking no target (part of the default run)."""
    session.install("-e", ".[postgres]")
    for name in BENCHMARKS:
        session.run("python", f"benchmarks/{name}.py", *SMOKE_SIZES[name], "--smoke")
