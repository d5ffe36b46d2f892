"""The image's layout, without Docker: the tasks run as an unprivileged user over a root-owned,
read-only copy of the code, with the image's environment.

The Dockerfile installs the code root-owned in /app and runs the tasks as the user
clonegallery, who may write only /app/data (the volume db-data) and /app/backups (the volume
db-backups, which INVOKE_DB_BACKUPS names). Here the same, on this machine:

    app/       tasks.py, db/, migrations/, seeders/, pyproject.toml: root's, chmod -R a-w
    data/      the user's: DATABASE_URL=sqlite:///.../data/clonegallery.db
    backups/   the user's, on another file system where one is at hand (two volumes are):
               INVOKE_DB_BACKUPS

and ``runuser -u USER -- env -i VARIABLES... PYTHON -S -m invoke --search-root app TASK``,
USER a throwaway user made for these tests. PYTHON is one the user can run, of this test
run's version, with this run's site-packages on PYTHONPATH (the packages the image pip-installs;
``-S``: no .pth files, so ``db`` is the read-only copy's, not the checkout's). Creating a user
and running as it needs root: elsewhere these tests skip.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from db.backups import manifest_path
from tests.conftest import PROJECT_ROOT, ok, one_error_line, printed_path

CODE = ("tasks.py", "db", "migrations", "seeders", "pyproject.toml")
# The PATH of the python:3.12-slim image.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SQLITE_FILE = "clonegallery.db"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = [
    pytest.mark.skipif(
        os.name != "posix" or os.geteuid() != 0,
        reason="needs root: creates a user and runs the tasks as it (runuser)",
    ),
    pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser (util-linux)"),
]


# -- the image's user, code and volumes --------------------------------------------------


@pytest.fixture(scope="module")
def image_user():
    """A throwaway unprivileged user with a home, as the image's clonegallery; removed after."""
    name = f"cgimage{os.getpid()}"
    subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def open_folder(parent=None):
    """Create a folder every user may enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="clonegallery-image-", dir=parent))
    folder.chmod(0o755)
    return folder


def remove_folder(folder):
    subprocess.run(["chmod", "-R", "u+w", folder], check=True)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def app_code():
    """/app: a root-owned, read-only copy of the code the image holds (no backups/ in it)."""
    root = open_folder()
    app = root / "app"
    app.mkdir()
    for name in CODE:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, app / name)
    subprocess.run(["chmod", "-R", "a-w,a+rX", app], check=True)
    yield app
    remove_folder(root)


@pytest.fixture(scope="module")
def user_python(image_user):
    """(python, PYTHONPATH): an interpreter the user can run, of this run's version, and this
    run's site-packages — or, where the user cannot read them (a checkout under /root), a
    copy of them in a folder the user may read, as the image's are."""
    paths = list(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))
    candidates = [sys.executable, f"/usr/bin/python{PYTHON_VERSION}"]
    candidates.append(f"/usr/local/bin/python{PYTHON_VERSION}")
    found = _runnable_python(image_user, candidates, os.pathsep.join(paths))
    if found:
        yield found
        return
    copies = open_folder()
    try:
        for number, path in enumerate(paths):
            shutil.copytree(path, copies / str(number), symlinks=True)
        found = _runnable_python(
            image_user, candidates, os.pathsep.join(str(copies / str(n)) for n in range(len(paths)))
        )
        if not found:
            pytest.skip(f"no Python {PYTHON_VERSION} that {image_user.pw_name} can run")
        yield found
    finally:
        shutil.rmtree(copies)


def _runnable_python(user, candidates, site_packages):
    """Return (python, site_packages) for the first candidate the user can run with those
    packages, or None."""
    probe = "import sys, invoke, peewee, zstandard; print('%d.%d' % sys.version_info[:2])"
    for python in dict.fromkeys(candidates):
        env = {"PATH": IMAGE_PATH, "PYTHONPATH": site_packages}
        found = run_as(user, [python, "-S", "-c", probe], env)
        if found.returncode == 0 and found.stdout.strip() == PYTHON_VERSION:
            return python, site_packages
    return None


@pytest.fixture
def volumes(image_user):
    """(data, backups): the user's folders, as the volumes db-data and db-backups; the backups
    on another file system where one is at hand (a restore's safety backup is then a copy)."""
    root = open_folder()
    shm = Path("/dev/shm")
    elsewhere = shm.is_dir() and shm.stat().st_dev != root.stat().st_dev
    backups_root = open_folder(shm) if elsewhere else root
    data, backups = root / "data", backups_root / "backups"
    for folder in (data, backups):
        folder.mkdir()
        os.chown(folder, image_user.pw_uid, image_user.pw_gid)
    yield data, backups
    for folder in {root, backups_root}:
        remove_folder(folder)


@pytest.fixture
def database_url(request, volumes):
    """The database the image's user works on: SQLite in the data folder, as the image's
    DATABASE_URL, or a new database on the server of the engine under test."""
    if request.getfixturevalue("engine") == "sqlite":
        return f"sqlite:///{volumes[0] / SQLITE_FILE}"
    return request.getfixturevalue("engine_url")


def run_as(user, command, env, cwd="/"):
    """Run ``command`` as ``user``, in ``cwd``, with exactly the environment ``env``."""
    variables = [f"{name}={value}" for name, value in env.items()]
    return subprocess.run(
        ["runuser", "-u", user.pw_name, "--", "env", "-i", *variables, *command],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


@pytest.fixture
def image_invoke(image_user, user_python, app_code):
    """Run ``invoke ARGS`` as the image does: as the user, in /app, with the image's
    environment plus ``variables`` (DATABASE_URL, INVOKE_DB_BACKUPS...)."""
    python, site_packages = user_python

    def run(*args, **variables):
        env = {
            "PATH": IMAGE_PATH,
            "HOME": image_user.pw_dir,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": site_packages,
            **variables,
        }
        command = [python, "-S", "-m", "invoke", "--search-root", str(app_code), *args]
        return run_as(image_user, command, env, cwd=app_code)  # the image's WORKDIR

    return run


def row_counts(run):
    """Return {table: rows} of the database, as db.stats --json counts them for the user."""
    stats = json.loads(ok(run("db.stats", "--json")).stdout)
    return {table["name"]: table["rows"] for table in stats["tables"]}


def owners_and_modes(folder):
    """Return {file name: (owner uid, permission bits)} of the files in ``folder``."""
    return {
        path.name: (path.stat().st_uid, path.stat().st_mode & 0o777)
        for path in folder.iterdir()
        if path.is_file()
    }


# -- the tests ---------------------------------------------------------------------------


def test_the_code_is_read_only_to_the_image_user(image_user, app_code):
    for path in (app_code, app_code / "tasks.py", app_code / "db"):
        writable = run_as(image_user, ["test", "-w", str(path)], {"PATH": IMAGE_PATH})
        assert writable.returncode == 1, f"{image_user.pw_name} may write {path}"
    assert not (app_code / "backups").exists()


def test_the_image_user_sets_up_backs_up_lists_verifies_and_restores(
    engine, image_invoke, image_user, volumes, database_url
):
    data, backups = volumes

    def run(*args):
        return image_invoke(*args, DATABASE_URL=database_url, INVOKE_DB_BACKUPS=str(backups))

    ok(run("db.setup"))
    plain = printed_path(run("db.backup"), "backup")
    compressed = printed_path(run("db.backup", "--compress"), "backup")
    backed_up = row_counts(run)
    listing = ok(run("db.backups")).stdout
    for backup in (plain, compressed):
        assert backup.parent == backups
        assert backup.name in listing
        assert ok(run("db.verify", str(backup))).stdout.startswith("OK")
    ok(run("db.reset", "--yes"))
    assert row_counts(run) == {"database_identity": 1}  # a reset database stays itself

    ok(run("db.restore", str(compressed), "--yes"))

    assert row_counts(run) == backed_up
    written = owners_and_modes(backups)
    assert {owner for owner, _ in written.values()} == {image_user.pw_uid}
    # Every backup (the restore's safety backup too) and its manifest.
    private = [
        file
        for path in backups.iterdir()
        if manifest_path(path).exists()
        for file in (path, manifest_path(path))
    ]
    assert {plain, compressed, manifest_path(plain)} < set(private)
    assert len(private) == 6, "two backups, the safety backup, and their manifests"
    for path in private:
        assert written[path.name][1] == 0o600, f"{path.name}: {written[path.name][1]:o}"
    if engine == "sqlite":
        assert {owner for owner, _ in owners_and_modes(data).values()} == {image_user.pw_uid}


@pytest.mark.parametrize("folder", ["the code's backups/", "a folder of root's"])
def test_a_backups_folder_the_user_cannot_write_is_one_line_naming_it_and_its_setting(
    image_invoke, volumes, app_code, folder
):
    data, _ = volumes
    url = f"sqlite:///{data / SQLITE_FILE}"
    ok(image_invoke("db.setup", DATABASE_URL=url))
    before = (data / SQLITE_FILE).read_bytes()
    if folder == "the code's backups/":
        # INVOKE_DB_BACKUPS unset: the default, backups/ beside tasks.py, in read-only code.
        unwritable, setting = app_code / "backups", {}
    else:
        unwritable = data.parent / "root-only"
        unwritable.mkdir(mode=0o755)
        setting = {"INVOKE_DB_BACKUPS": str(unwritable)}

    result = image_invoke("db.backup", DATABASE_URL=url, **setting)

    one_error_line(result, None, str(unwritable), "INVOKE_DB_BACKUPS")
    assert not unwritable.exists() or not any(unwritable.iterdir())
    assert (data / SQLITE_FILE).read_bytes() == before


def test_the_image_user_writes_health_metrics_to_its_volume_and_not_to_roots_folder(
    image_invoke, image_user, volumes
):
    data, backups = volumes
    url = f"sqlite:///{data / SQLITE_FILE}"
    setting = {"DATABASE_URL": url, "INVOKE_DB_BACKUPS": str(backups)}
    ok(image_invoke("db.setup", **setting))
    ok(image_invoke("db.backup", "--verify", **setting))
    metrics = data.parent / "metrics"  # the volume db-metrics, the user's as the image makes it
    metrics.mkdir()
    os.chown(metrics, image_user.pw_uid, image_user.pw_gid)
    roots = data.parent / "root-only"
    roots.mkdir(mode=0o755)

    checked = image_invoke("db.health", "--prometheus", str(metrics / "db.prom"), **setting)
    refused = image_invoke("db.health", "--prometheus", str(roots / "db.prom"), **setting)

    assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # a disk may be full
    assert "clonegallery_db_health_status" in (metrics / "db.prom").read_text()
    assert sorted(path.name for path in metrics.iterdir()) == ["db.prom"]
    one_error_line(refused, 3, f"--prometheus {roots / 'db.prom'}", "Permission denied")
    assert not any(roots.iterdir())
