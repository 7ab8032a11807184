"""The distribution: a name of our own on PyPI, its metadata, and its extras."""

from __future__ import annotations

import tomllib

import crawler

from .conftest import ROOT


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]  # type: ignore[no-any-return]


def test_the_distribution_has_its_own_name_but_keeps_the_command_and_package() -> None:
    meta = project()
    assert meta["name"] == "distributed-image-crawler"  # "crawler" is someone else's on PyPI
    assert meta["scripts"] == {"crawler": "crawler.cli:run"}  # type: ignore[comparison-overlap]
    assert "version" in meta["dynamic"]  # type: ignore[operator]
    assert crawler.__version__.count(".") == 2


def test_license_authors_urls_and_classifiers() -> None:
    meta = project()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert meta["license"] == {"file": "LICENSE"}
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
