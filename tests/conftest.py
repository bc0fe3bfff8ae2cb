import os
import sys
from pathlib import Path

import pytest

try:
    # submitit configures logging with dictConfig at import, which closes every existing handler; absl's handler
    # (imported with tensorboard by the in-process P3 runner tests) closes sys.stderr when closed. Import it first.
    import submitit  # noqa: F401
except ImportError:
    pass

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def project(tmp_path):
    """A throw-away upstream and a hyperrestart project pinning it (tests/vendor_fixtures.py)."""
    from vendor_fixtures import FakeProject
    return FakeProject(tmp_path)


@pytest.fixture(scope="session")
def upstream_dest(tmp_path_factory):
    """DEST with both real upstreams materialised (profile modern); skips with the reason when unreachable."""
    from upstream_support import materialised_dest
    return materialised_dest(tmp_path_factory.mktemp("real"), "modern")


@pytest.fixture(scope="session")
def upstream_dest_paper(tmp_path_factory):
    from upstream_support import materialised_dest
    return materialised_dest(tmp_path_factory.mktemp("real-paper"), "paper")


@pytest.fixture(autouse=True)
def _hermetic_hf(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's Hugging Face caches or reaches the hub."""
    hf = tmp_path_factory.getbasetemp() / "hf-home"
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """HYPERRESTART_NO_SKIPS=1 (CI, where both upstreams and their envs are provided) turns every skip into a failure
    that keeps the skip's reason, so a broken mirror or env can never pass as 'skipped'."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("HYPERRESTART_NO_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but HYPERRESTART_NO_SKIPS=1 forbids skips: {reason}"
