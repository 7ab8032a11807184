"""The distribution: a name of our own on PyPI, its metadata, and its extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import crawler

from .conftest import ROOT


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]  # type: ignore[no-any-return]


def test_the_distribution_has_its_own_name_but_keeps_the_command_and_package() -> None:
    meta = project()
    assert meta["name"] == "distributed-image-crawler"  # "crawler" is someone else's on PyPI
    assert meta["scripts"] == {"crawler": "crawler.__main__:run"}  # type: ignore[comparison-overlap]
    assert "version" in meta["dynamic"]  # type: ignore[operator]
    assert crawler.__version__.count(".") == 2


def test_license_authors_urls_and_classifiers() -> None:
    meta = project()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert meta["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in meta["classifiers"]  # type: ignore[operator]
    assert meta["authors"]
    urls = meta["urls"]
    assert isinstance(urls, dict) and urls["Source"] == crawler.PROJECT_URL


def test_extras_split_tests_from_development_tools() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    names = {kind: {req.split(">")[0].split("[")[0] for req in reqs}
             for kind, reqs in extras.items()}
    assert {"pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "pyte",
            "import-linter"} <= names["test"]
    assert {"ruff", "mypy"} <= names["dev"] and not {"ruff", "mypy"} & names["test"]


def lint_imports(package_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with this repository's contracts, on the ``crawler`` under
    ``package_root``."""
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"],
                          cwd=package_root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(package_root)}, check=False)


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_up_the_layers_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "crawler", tmp_path / "crawler",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "crawler" / "model" / "upward.py").write_text(
        '"""A model module that reaches up into the master: not allowed."""\n\n'
        "from crawler.master import master  # noqa: F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crawler.model.upward -> crawler.master.master" in result.stdout


def test_setuptools_builds_the_metadata_we_mean(tmp_path: Path) -> None:
    """What an install records: name, version, license file, the command, the extras."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "crawler", tmp_path / "crawler",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = tmp_path / "info"
    info.mkdir()
    built = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()",
                            "-q", "egg_info", "--egg-base", str(info)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    (egg,) = info.glob("*.egg-info")
    meta = (egg / "PKG-INFO").read_text()
    assert "Name: distributed-image-crawler\n" in meta
    assert f"Version: {crawler.__version__}\n" in meta
    assert "License: MIT\n" in meta
    assert f"Project-URL: Source, {crawler.PROJECT_URL}\n" in meta
    assert "LICENSE" in (egg / "SOURCES.txt").read_text().split()
    assert "crawler = crawler.__main__:run" in (egg / "entry_points.txt").read_text()
    requires = (egg / "requires.txt").read_text()
    assert "[test]" in requires and "[dev]" in requires and "shtab" in requires
