"""What `pip install langsmith-webhook-pipeline` and the runtime image carry: the product, and not
the LangSmith stand-in (standin/, its own distribution lswh-standin). The wheel is built for real
from a copy of this checkout; `lswh dev` is run from an environment that has that wheel and not the
stand-in, as a user who skipped `pip install -e ./standin` has.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import dockerfile
import pytest

from tests.support.procs import ROOT

PRODUCT_PACKAGES = ("ingress", "workers", "lswh_core", "lswh")
BIN = Path(sys.executable).parent


def checkout_files() -> list[str]:
    """Tracked and new files, as a fresh clone would have them plus the change under test."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's wheel, built as `pip wheel .` builds it (isolated build, setuptools from the index)."""
    source = tmp_path_factory.mktemp("checkout")
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_product_wheel_has_no_stand_in(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith("langsmith_webhook_pipeline-")
    assert [n for n in names if "standin" in n.lower() or n.endswith(".json")] == []
    # Nothing in its metadata pulls the stand-in in either, under any extra.
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if "standin" in r.lower()]


def test_the_product_wheel_has_every_module_of_the_product(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {name for name in checkout_files() if name.split("/")[0] in PRODUCT_PACKAGES and name.endswith(".py")}
    assert {"lswh/cli.py", "lswh/dev.py", "ingress/app.py", "workers/__init__.py", "lswh_core/__init__.py"} <= modules
    assert modules - names == set()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == set(PRODUCT_PACKAGES)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "lswh = lswh.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_stand_ins_own_wheel_carries_its_modules_and_the_fixture_it_preloads(tmp_path: Path) -> None:
    # The compose test's stand-in image installs it non-editable: what is not in this wheel is not there.
    source = tmp_path / "checkout"
    for name in checkout_files():
        if name.startswith("standin/"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source / "standin"),
                           "-w", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = tmp_path.glob("lswh_standin-*.whl")
    names = set(zipfile.ZipFile(built).namelist())
    modules = {name.removeprefix("standin/") for name in checkout_files()
               if name.startswith("standin/lswh_standin/") and not name.endswith((".md", ".toml"))}
    assert "lswh_standin/fixtures/langsmith_docs_payload.json" in modules
    assert modules - names == set()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"lswh_standin"}


def test_the_stand_in_pins_the_sdk_the_product_pins() -> None:
    # It answers the SDK's own run fields (`select`), so both must resolve to one langsmith.
    def langsmith(pyproject: Path) -> list[str]:
        dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
        return [d for d in dependencies if re.match(r"langsmith\b", d)]

    assert langsmith(ROOT / "standin" / "pyproject.toml") == langsmith(ROOT / "pyproject.toml") != []


@pytest.fixture(scope="module")
def without_standin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with the product's wheel installed and not the stand-in. The product's dependencies
    come from this test run's environment, added as a plain path: its .pth files, and with them the
    editable installs (the stand-in's included), are not processed there."""
    venv = tmp_path_factory.mktemp("venv-without-standin")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # What the test relies on: the product is the wheel's, and the stand-in cannot be imported.
    where = subprocess.run([str(python), "-c", "import importlib.util, lswh; "
                            "print(lswh.__file__, importlib.util.find_spec('lswh_standin'))"],
                           cwd=venv, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(site) and where[1] == "None", where
    yield venv


def test_lswh_dev_without_the_stand_in_names_the_command_that_installs_it(without_standin: Path) -> None:
    # A Redis the run would ping first, before starting the stand-in: nothing may connect to it.
    with socket.socket() as redis:
        redis.bind(("127.0.0.1", 0))
        redis.listen()
        redis.settimeout(0.5)
        env = {"PATH": f"{without_standin / 'bin'}:/usr/bin:/bin", "HOME": str(without_standin),
               "REDIS_URL": f"redis://127.0.0.1:{redis.getsockname()[1]}/0"}
        started = time.monotonic()
        done = subprocess.run([str(without_standin / "bin" / "lswh"), "dev"], cwd=without_standin, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        took = time.monotonic() - started
        with pytest.raises(TimeoutError):
            redis.accept()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "LANGSMITH_API_KEY is not set" in done.stderr
    assert f"{without_standin / 'bin' / 'python'} -m pip install -e ./standin" in done.stderr
    assert done.stderr.count("\n") == 3, done.stderr  # the message alone: no child said anything
    assert took < 20


def test_the_runtime_image_leaves_the_stand_in_out_of_its_build_context() -> None:
    # The product image builds from the repository with .dockerignore: standin/ is not sent at all,
    # and what it installs is the product (`.`) and the product's own dependencies.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "standin" in ignored
    installs = [c.value[0] for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd == "RUN"
                and "pip install" in c.value[0]]
    assert installs and not [r for r in installs if "standin" in r]
    assert any("pip install --no-deps ." in r for r in installs)


def test_the_compose_tests_stand_in_image_is_its_own() -> None:
    # Not FROM the project image: the stand-in's distribution alone on the python base.
    path = ROOT / "tests" / "compose" / "standin.Dockerfile"
    steps = dockerfile.parse_file(str(path))
    (base,) = [c for c in steps if c.cmd == "FROM"]
    assert base.value[0] == "${PYTHON_IMAGE}"
    installs = [c.value[0] for c in steps if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert installs == [i for i in installs if "pip install ." in i] != []
    (cmd,) = [c for c in steps if c.cmd == "CMD"]
    assert list(cmd.value[:3]) == ["python", "-m", "lswh_standin"]
    assert (ROOT / "standin" / "pyproject.toml").exists()
    assert (ROOT / "standin" / "lswh_standin" / "__main__.py").exists()
    result = subprocess.run([str(BIN / "hadolint"), str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
