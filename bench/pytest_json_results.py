"""pytest plugin for bench/gpu_check.sh: one JSON line per test outcome {test, outcome,
when, seconds[, message]} (outcome "error" for a file that could not be collected),
appended as each test finishes, so a time-boxed run that is stopped still leaves what it ran. Load with `-p pytest_json_results` (bench/ on PYTHONPATH)
and SPSR_TEST_RESULTS=PATH. Under pytest-xdist only the controller writes."""
from __future__ import annotations

import json
import os

_config = None


def pytest_configure(config):
    global _config
    _config = config


def _path():
    if _config is not None and hasattr(_config, "workerinput"):
        return None
    return os.environ.get("SPSR_TEST_RESULTS")


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def pytest_collectreport(report):
    path = _path()
    if path and report.failed:  # a test file that could not be imported
        _append(path, {"test": report.nodeid, "outcome": "error", "when": "collect", "seconds": 0.0,
                       "message": report.longreprtext[-2000:]})


def pytest_runtest_logreport(report):
    path = _path()
    if not path:
        return
    # one line per test: the call's outcome, or the setup/teardown that failed or skipped it
    if report.when != "call" and report.passed:
        return
    record = {"test": report.nodeid, "outcome": report.outcome, "when": report.when,
              "seconds": round(report.duration, 3)}
    if report.failed:
        record["message"] = report.longreprtext[-2000:]
    elif report.skipped and isinstance(report.longrepr, tuple):
        record["message"] = str(report.longrepr[2])
    _append(path, record)
