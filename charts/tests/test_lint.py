"""`helm lint --strict` through the real Helm library, against the kind node's Kubernetes version."""

from __future__ import annotations

import helm_python
import pytest

from conftest import CHART_DIR, SCENARIOS, kind_node_version

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario):
    report = helm_python.lint(
        str(CHART_DIR),
        SCENARIOS[scenario],
        strict=True,
        kube_version=f"v{kind_node_version()}",
    )
    problems = [
        f"{SEVERITY.get(m['severity'], m['severity'])}: {m['path']}: {m['error']}"
        for m in report["messages"]
        if m["severity"] >= 2
    ]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], "\n".join(problems + report["errors"])


def test_lint_reports_schema_violations():
    """The lint really checks: a value the schema forbids is an error."""
    report = helm_python.lint(str(CHART_DIR), {"executor": "celery"}, strict=True)
    assert any(m["severity"] == 3 and "executor" in m["error"] for m in report["messages"])
