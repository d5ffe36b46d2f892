"""Benchmark how fast a command starts: ``invoke db.status`` against the floor of Invoke and peewee.

    python benchmarks/startup.py                # 21 runs a side
    python benchmarks/startup.py --repeats 51
    nox -s bench -- startup

Every run is a fresh process timed by wall clock, as a user starts it, on the same
interpreter:

- the floor: ``invoke`` running an empty task of a throwaway ``tasks.py`` that imports
  peewee (what any Invoke + peewee tool pays before doing anything);
- ours: ``invoke db.status`` on an up-to-date SQLite database (migrated once, off the clock);
- for the record, not judged: ``clonegallery-db status`` (``python -m db``) on the same database.

The sides take turns (so a slow spell of the machine hits each), after one warm-up run
each that writes the bytecode caches; the medians are compared. Target: ours <= 1.3x the
floor. A last line names the modules ``import tasks`` spends most on (``-X importtime``).
Exit status 1 when the target is missed.
"""

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.3
INVOKE = [sys.executable, "-m", "invoke"]
FLOOR_TASKS = '''"""An empty task beside peewee: the floor of an Invoke + peewee tool's start-up."""

import peewee  # noqa: F401
from invoke import task


@task
def empty(c):
    """Do nothing."""
'''


def clean_environment(**extra):
    """Return this environment without the settings that would point a side elsewhere."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    for name in ("DATABASE_URL", "CLONEGALLERY_PROJECT"):
        environment.pop(name, None)
    return {**environment, **extra}


def run_timed(command, env):
    """Run a command to its end; return its wall time in seconds (it must succeed)."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}\n{result.stderr.decode()}")
    return seconds


def byte_compile_ours():
    """Compile the toolkit's modules as an install would: the floor's libraries come
    byte-compiled from pip, and with PYTHONDONTWRITEBYTECODE (set on some machines and
    CI) ours would otherwise be compiled from source on every run, measuring the
    compiler rather than the start-up."""
    compileall.compile_dir(PROJECT_DIR / "db", quiet=1)
    compileall.compile_file(PROJECT_DIR / "tasks.py", quiet=1)


def migrate_once(url):
    """Bring the database at ``url`` up to date (off the clock), as a user would."""
    subprocess.run(
        [*INVOKE, "--search-root", str(PROJECT_DIR), "db.migrate"],
        env=clean_environment(DATABASE_URL=url), check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def sides(folder, url):
    """Return each side as (name, command, environment, judged)."""
    (folder / "tasks.py").write_text(FLOOR_TASKS)
    on_database = clean_environment(DATABASE_URL=url)
    return [
        ("floor: invoke empty + import peewee",
         [*INVOKE, "--search-root", str(folder), "empty"], clean_environment(), False),
        ("ours: invoke db.status",
         [*INVOKE, "--search-root", str(PROJECT_DIR), "db.status"], on_database, True),
        ("clonegallery-db status",
         [sys.executable, "-m", "db", "--project", str(PROJECT_DIR), "status"], on_database, False),
    ]  # fmt: skip


def measure(runs, repeats):
    """Run every side once to warm up, then ``repeats`` times in turn; return each one's
    wall times."""
    for _, command, env, _ in runs:
        run_timed(command, env)
    times = {name: [] for name, *_ in runs}
    for _ in range(repeats):
        for name, command, env, _ in runs:
            times[name].append(run_timed(command, env))
    return times


def print_table(runs, times):
    """Print each side's best and median, its ratio to the floor; return whether ours met
    the target."""
    floor = statistics.median(times[runs[0][0]])
    print(f"{'side':<36} {'best s':>7} {'median s':>9} {'ratio':>6}  {'target':>7}  verdict")
    met = True
    for index, (name, _, _, judged) in enumerate(runs):
        median = statistics.median(times[name])
        ratio = median / floor
        if judged:
            met &= ratio <= TARGET_RATIO
        target = f"<={TARGET_RATIO}x" if judged else ""
        verdict = ("PASS" if ratio <= TARGET_RATIO else "MISSED") if judged else ""
        shown = "" if index == 0 else f"{ratio:>5.2f}x"
        line = (
            f"{name:<36} {min(times[name]):>7.3f} {median:>9.3f} {shown:>6}  {target:>7}  {verdict}"
        )
        print(line.rstrip())
    return met


def import_tree(module):
    """Return ``import MODULE``'s imports as a tree of (name, cumulative ms, children),
    read from ``python -X importtime`` (which lists each module after its own imports)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=PROJECT_DIR, env=clean_environment(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    waiting = {}  # depth -> modules imported at that depth whose importer is not listed yet
    for line in result.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the heading, or a line of the program's own
        name = fields[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        node = (name.strip(), int(fields[1]) / 1000, waiting.pop(depth + 1, []))
        waiting.setdefault(depth, []).append(node)
    return next(node for node in waiting.get(0, []) if node[0] == module)


def costliest_imports(module, count=5):
    """Return where ``import MODULE``'s time goes: down through any import that takes
    nearly all of its importer's time, the ``count`` costliest imports of the module
    reached, with their cumulative milliseconds."""
    name, total, children = import_tree(module)
    path = [name]
    while children and max(c[1] for c in children) >= 0.8 * total:
        name, total, children = max(children, key=lambda child: child[1])
        path.append(name)
    ranked = sorted(children, key=lambda child: child[1], reverse=True)[:count]
    listed = ", ".join(f"{child} {ms:.0f} ms" for child, ms, _ in ranked)
    return f"{' > '.join(path)} ({total:.0f} ms): {listed or 'nothing more'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="runs per side (median taken)")
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, few runs)"
    )
    # nox -s bench passes its options to every benchmark: the sizes of the others mean
    # nothing to a start-up, which is said and left alone.
    args, others = parser.parse_known_args()
    if others:
        print(f"(options for the other benchmarks left alone: {' '.join(others)})")
    with tempfile.TemporaryDirectory(prefix="clonegallery-bench-startup-") as scratch:
        folder = Path(scratch)
        url = f"sqlite:///{folder / 'clonegallery.db'}"
        byte_compile_ours()
        migrate_once(url)
        runs = sides(folder, url)
        print(f"start-up, {args.repeats} runs a side (Python {sys.version.split()[0]}):")
        met = print_table(runs, measure(runs, args.repeats))
    print(f"import tasks, costliest imports: {costliest_imports('tasks')}")
    sys.exit(0 if met or args.smoke else 1)


if __name__ == "__main__":
    main()
