"""Tests marked ``loopback_only``, run again alone in a network namespace of their own.

Such a test names addresses off this host (10.255.255.1, 169.254.169.254,
192.168.255.254) that the crawler must refuse. Here, with the guard right,
nothing goes there; with it broken, a connection would leave by the default
route before the test failed. In a namespace where only loopback is up, that
connection fails at once (ENETUNREACH) and the test with it. The outer run
reports what the inner one did: passed, failed (with its output) or skipped
(with its reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
INSIDE_ENV = "CRAWLER_TEST_LOOPBACK_ONLY"  # the node id of the test run inside
INNER_TIMEOUT = 150  # seconds: the inner pytest's own timeout, under the outer's 180
WAIT = INNER_TIMEOUT + 20  # for the inner run, its start and its report included


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    node = f"{pyfuncitem.path}::{pyfuncitem.name}"
    if pyfuncitem.get_closest_marker("loopback_only") is None \
            or os.environ.get(INSIDE_ENV) == node:
        return None  # an ordinary test, or this one inside its namespace: run it here
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare(1) and ip(8): a network namespace with loopback alone "
                    "for the addresses off this host it names")
    # Not root: a user namespace of our own makes a network namespace ours to make.
    unshare = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                 "no:xdist", "-o", f"timeout={INNER_TIMEOUT}", f"--junitxml={report}",
                 "--rootdir", str(ROOT), node]
        output = _run([*unshare, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                       *inner], env={**os.environ, INSIDE_ENV: node})
        outcome, reason = _outcome(report)
    if outcome == "skipped":
        pytest.skip(f"in its namespace: {reason}")
    if outcome != "passed":
        pytest.fail(f"in a namespace with loopback alone, the test {outcome}:\n{output}",
                    pytrace=False)
    return True


def _run(command: list[str], env: dict[str, str]) -> str:
    """Run ``command`` in a session of its own; its output. One that overruns is killed
    with everything it started (the namespace's processes die with it)."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"in its namespace, the test ran past {WAIT} s:\n{output}", pytrace=False)
    return output


def _outcome(report: Path) -> tuple[str, str]:
    """What the inner run's JUnit report says of its one test: passed, failed, error or
    skipped, and the reason of a skip; "no report" when it wrote none."""
    if not report.exists():
        return "no report", ""
    # (Written by our own pytest run just now.)
    cases = ElementTree.parse(report).getroot().iter("testcase")  # noqa: S314
    for case in cases:
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                return ("failed" if kind == "failure" else kind), found.get("message", "")
        return "passed", ""
    return "not run", ""
