"""metrics.serviceMonitor: Prometheus Operator ServiceMonitors for the API and the operator.

Offline rendering only: these tests prove which objects the chart produces and that their
selectors and ports line up with the chart's own Services and pods, not that a Prometheus
scrapes them (no cluster here)."""

from __future__ import annotations

import helm_python
import pytest

from conftest import CHART_DIR, deep_merge, kind_values, render_scenario, render_values


def service_monitors(r):
    return r.of_kind("ServiceMonitor")


def test_off_by_default():
    for scenario in ("default", "kind"):
        r = render_scenario(scenario)
        assert not service_monitors(r)
        assert not r.find("Service", "bulk-import-api-metrics")


def test_each_service_monitor_selects_one_metrics_service_of_a_pod_port():
    r = render_scenario("kind-service-monitor")
    monitors = service_monitors(r)
    assert sorted(m.name for m in monitors) == ["bulk-import-api", "bulk-import-operator"]
    deployments = r.of_kind("Deployment")
    for monitor in monitors:
        spec = monitor.doc["spec"]
        assert monitor.doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor.doc["metadata"]["labels"]["release"] == "prometheus"
        assert spec["namespaceSelector"] == {"matchNames": [r.namespace]}
        selected = [
            s for s in r.of_kind("Service")
            if spec["selector"]["matchLabels"].items() <= s.doc["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{monitor!r} selects {selected}"
        service = selected[0].doc
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        # The Service's target port is a named container port of the component's pods, and
        # that port is the one the binary serves /metrics on (METRICS_BIND_ADDR for the API).
        component = monitor.doc["metadata"]["labels"]["app.kubernetes.io/component"]
        (deployment,) = [d for d in deployments
                         if d.doc["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        container = deployment.doc["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["targetPort"] in ports
        if component == "api":
            assert port["targetPort"] == "metrics"
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["METRICS_BIND_ADDR"].endswith(f":{ports['metrics']}")


def test_the_apis_public_service_still_has_no_metrics_port():
    r = render_scenario("kind-service-monitor")
    public = r.get("Service", "bulk-import-api")
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]


def test_needs_the_operators_metrics_service():
    values = deep_merge(kind_values(), {
        "metrics": {"serviceMonitor": {"enabled": True}},
        "operator": {"metricsService": {"enabled": False}},
    })
    with pytest.raises(helm_python.HelmError, match="operator.metricsService.enabled"):
        render_values(values)


@pytest.mark.parametrize("bad", [
    {"interval": "30"},
    {"interval": "half a minute"},
    {"scrapeTimeout": ""},
    {"labels": {"release": 1}},
    {"enabeld": True},
])
def test_schema_rejects_bad_values(bad):
    values = {"metrics": {"serviceMonitor": {"enabled": True, **bad}}}
    with pytest.raises(helm_python.HelmError):
        helm_python.Chart.load(str(CHART_DIR)).validate_schema(deep_merge(kind_values(), values))
