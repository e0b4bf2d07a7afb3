"""Importer placement (values into the operator's environment, checked by the schema), the
importer egress NetworkPolicy, the API's topology spread and the `helm test` hooks."""

from __future__ import annotations

import json

import helm_python
import pytest
import yaml

from conftest import (
    RELEASE,
    TESTS_DIR,
    Rendered,
    configmap_data,
    load_json,
    render_scenario,
    render_values,
)

ENV = load_json(TESTS_DIR / "env_expected.json")
OPERATOR_CONFIG = "bulk-import-operator-config"

PLACEMENT = {
    "nodeSelector": {"pool": "imports"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "imports", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    "priorityClassName": "batch-low",
    "podLabels": {"kueue.x-k8s.io/queue-name": "imports"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "ephemeralStorage": {"request": "256Mi", "limit": "2Gi"},
}
JSON_VARS = {
    "IMPORTER_NODE_SELECTOR": "nodeSelector",
    "IMPORTER_TOLERATIONS": "tolerations",
    "IMPORTER_AFFINITY": "affinity",
    "IMPORTER_POD_LABELS": "podLabels",
    "IMPORTER_POD_ANNOTATIONS": "podAnnotations",
}


# ---- placement ------------------------------------------------------------------------------

def test_placement_values_reach_the_operators_environment():
    config = configmap_data(render_values({"importer": PLACEMENT}), OPERATOR_CONFIG)
    for var, key in JSON_VARS.items():
        assert json.loads(config[var]) == PLACEMENT[key], var
    assert config["IMPORTER_PRIORITY_CLASS_NAME"] == "batch-low"
    assert config["IMPORTER_EPHEMERAL_STORAGE_REQUEST"] == "256Mi"
    assert config["IMPORTER_EPHEMERAL_STORAGE_LIMIT"] == "2Gi"


def test_placement_defaults_are_empty_json_and_a_storage_request():
    config = configmap_data(render_scenario("default"), OPERATOR_CONFIG)
    assert {var: json.loads(config[var]) for var in JSON_VARS} == {
        "IMPORTER_NODE_SELECTOR": {}, "IMPORTER_TOLERATIONS": [], "IMPORTER_AFFINITY": {},
        "IMPORTER_POD_LABELS": {}, "IMPORTER_POD_ANNOTATIONS": {},
    }
    # Empty: the operator reads it as unset.
    assert config["IMPORTER_PRIORITY_CLASS_NAME"] == ""
    assert config["IMPORTER_EPHEMERAL_STORAGE_REQUEST"] == "128Mi"
    assert config["IMPORTER_EPHEMERAL_STORAGE_LIMIT"] == ""


BAD_PLACEMENT = {
    "reserved label": ({"podLabels": {"app.kubernetes.io/component": "x"}}, "/importer/podLabels"),
    "job id label": ({"podLabels": {"bulkimport.dev/job-id": "x"}}, "/importer/podLabels"),
    "label value too long": ({"podLabels": {"a": "x" * 64}}, "/importer/podLabels/a"),
    "non-string node selector": ({"nodeSelector": {"pool": 1}}, "/importer/nodeSelector/pool"),
    "toleration effect": ({"tolerations": [{"key": "k", "effect": "NoRun"}]}, "/importer/tolerations/0/effect"),
    "toleration typo": ({"tolerations": [{"kye": "k"}]}, "/importer/tolerations/0"),
    "affinity typo": ({"affinity": {"nodeAfinity": {}}}, "/importer/affinity"),
    "priority class name": ({"priorityClassName": "Batch Low"}, "/importer/priorityClassName"),
    "storage quantity": ({"ephemeralStorage": {"request": "1GB", "limit": ""}}, "/importer/ephemeralStorage/request"),
    "storage negative": ({"ephemeralStorage": {"request": "", "limit": "-1Gi"}}, "/importer/ephemeralStorage/limit"),
    "egress port": ({"networkPolicy": {"postgres": {"port": 70000}}}, "/importer/networkPolicy/postgres/port"),
    "egress peer typo": ({"networkPolicy": {"redis": {"to": [{"podSelectr": {}}]}}}, "/importer/networkPolicy/redis/to/0"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLACEMENT))
def test_schema_rejects_bad_placement(case):
    values, where = BAD_PLACEMENT[case]
    with pytest.raises(helm_python.HelmValuesError) as err:
        render_values({"importer": values})
    assert where in str(err.value), str(err.value)


# ---- the importer egress policy -------------------------------------------------------------

def importer_pod_labels() -> dict:
    """What operator/src/job_template.rs puts on importer pods (a Rust test holds it to this)."""
    return {k: v.replace("{release}", RELEASE) for k, v in ENV["importerPodLabels"].items()}


def egress_by_port(policy: dict) -> dict[int, dict]:
    rules = {}
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule["ports"]}
        assert len(ports) == 1, rule
        rules[ports.pop()] = rule
    return rules


def test_the_egress_policy_selects_the_importer_pods_and_nothing_else(rendered: Rendered):
    policy = rendered.get("NetworkPolicy", "bulk-import-importer")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= importer_pod_labels().items()
    assert selector["app.kubernetes.io/component"] == "importer"
    assert selector["app.kubernetes.io/instance"] == RELEASE, "only this release's importers"
    # No pod the chart runs itself matches: the API, operator and dependencies keep their own.
    for m in rendered.manifests:
        if m.kind == "Deployment":
            labels = m.doc["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= labels.items(), m
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [], "importer pods serve nothing"


def test_the_egress_policy_admits_only_dns_postgres_redis_and_storage_by_default():
    policy = render_scenario("default").get("NetworkPolicy", "bulk-import-importer")
    rules = egress_by_port(policy)
    assert set(rules) == {53, 5432, 6379, 443}  # s3.endpointUrl is https://… without a port
    assert {p["protocol"] for p in rules[53]["ports"]} == {"UDP", "TCP"}
    for port in (5432, 6379, 443):
        assert [p["protocol"] for p in rules[port]["ports"]] == ["TCP"]
    # No peers given: any address, but only on those ports.
    assert all("to" not in rule for rule in rules.values())


def test_on_kind_the_egress_policy_admits_the_bundled_services_by_their_pods(kind_rendered: Rendered):
    rules = egress_by_port(kind_rendered.get("NetworkPolicy", "bulk-import-importer"))
    assert set(rules) == {53, 5432, 6379, 9000}  # MinIO's S3 port
    for port, component in ((5432, "postgres"), (6379, "redis"), (9000, "minio")):
        (peer,) = rules[port]["to"]
        assert set(peer) == {"podSelector"}, peer
        deployment = kind_rendered.get("Deployment", f"bulk-import-{component}")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items(), component
        container_ports = {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])}
        assert port in container_ports, component


def test_egress_peers_and_ports_come_from_the_values():
    peers = {
        "dns": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "postgres": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
        "redis": [{"ipBlock": {"cidr": "10.30.0.5/32"}}],
        "objectStorage": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
    }
    values = {"s3": {"endpointUrl": "http://s3.storage.svc:7480"},
              "importer": {"networkPolicy": {name: {"to": to} for name, to in peers.items()}}}
    values["importer"]["networkPolicy"]["postgres"]["port"] = 6432
    rules = egress_by_port(render_values(values).get("NetworkPolicy", "bulk-import-importer"))
    assert set(rules) == {53, 6432, 6379, 7480}, "the endpoint's own port"
    assert [rules[p]["to"] for p in (53, 6432, 6379, 7480)] == list(peers.values())
    plain_http = render_values({"s3": {"endpointUrl": "http://s3.storage.svc"}})
    assert 80 in egress_by_port(plain_http.get("NetworkPolicy", "bulk-import-importer"))
    explicit = render_values({"importer": {"networkPolicy": {"objectStorage": {"port": 8443}}}})
    assert 8443 in egress_by_port(explicit.get("NetworkPolicy", "bulk-import-importer"))


def test_the_egress_policy_can_be_turned_off():
    r = render_values({"importer": {"networkPolicy": {"enabled": False}}})
    assert not r.find("NetworkPolicy", "bulk-import-importer")


# ---- topology spread of the API -------------------------------------------------------------

def test_api_replicas_spread_over_zones_and_nodes(rendered: Rendered):
    pod = rendered.get("Deployment", "bulk-import-api")["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for c in constraints:
        assert c["maxSkew"] == 1
        assert c["whenUnsatisfiable"] == "ScheduleAnyway", "a preference: one node still schedules"
        assert c["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
        assert c["matchLabelKeys"] == ["pod-template-hash"]


def test_topology_spread_follows_the_values():
    strict = render_values({"api": {"topologySpread": {"whenUnsatisfiable": "DoNotSchedule",
                                                       "maxSkew": 2, "topologyKeys": ["kubernetes.io/hostname"]}}})
    (c,) = strict.get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (c["topologyKey"], c["maxSkew"], c["whenUnsatisfiable"]) == ("kubernetes.io/hostname", 2, "DoNotSchedule")
    off = render_values({"api": {"topologySpread": {"enabled": False}}})
    assert "topologySpreadConstraints" not in off.get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]
    with pytest.raises(helm_python.HelmValuesError):
        render_values({"api": {"topologySpread": {"whenUnsatisfiable": "Sometimes"}}})


# ---- helm test ------------------------------------------------------------------------------

API_URL = "http://bulk-import-api.imports.svc:8000"


def hooks_of(rendered: Rendered) -> list:
    return [m for m in rendered.manifests
            if (m.doc["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]


def test_helm_test_hooks_are_test_hooks_replaced_on_each_run(rendered: Rendered):
    hooks = hooks_of(rendered)
    assert {(m.kind, m.name) for m in hooks} == {
        ("Pod", "bulk-import-test-health"), ("Pod", "bulk-import-test-import"),
        ("ConfigMap", "bulk-import-test-import"), ("Secret", "bulk-import-test-import"),
    }
    for m in hooks:
        assert m.doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation", m
    pods = [m for m in hooks if m.kind == "Pod"]
    for m in pods:
        assert m.doc["spec"]["restartPolicy"] == "Never", m
        assert m.doc["spec"]["automountServiceAccountToken"] is False, m
    # The pod's ConfigMap and Secret exist before it (lower weight first).
    for m in hooks:
        weight = int(m.doc["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
        assert weight == (0 if m.kind == "Pod" else -1), m


def test_the_health_test_gets_health_and_ready_from_the_api_service():
    pod = render_scenario("default").get("Pod", "bulk-import-test-health")
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["curl"]
    assert "--fail" in c["args"] and "--fail-early" in c["args"], "a 503 from /ready fails it"
    assert [a for a in c["args"] if a.startswith("http")] == [f"{API_URL}/health", f"{API_URL}/ready"]


def test_the_import_test_registers_imports_waits_and_checks_each_customer():
    r = render_scenario("default")
    pod = r.get("Pod", "bulk-import-test-import")["spec"]
    steps = pod["initContainers"] + pod["containers"]
    csv = r.get("ConfigMap", "bulk-import-test-import")["data"]["customers.csv"]
    rows = csv.strip().splitlines()[1:]
    emails = [row.split(",")[0] for row in rows]
    assert [s["args"] for s in steps] == [
        ["register", "--email", "helm-test-$(POD_UID)@example.com"],
        ["import", "/data/customers.csv", "--wait", "--timeout", "5m"],
    ] + [["customers", "get", e] for e in emails]
    assert len(emails) == 3
    for s in steps:
        assert s["image"] == "bulk-import:0.1.0", "the chart's own image, which has the CLI"
        assert s["command"] == ["bulk-import"]
        env = {e["name"]: e for e in s["env"]}
        assert env["BULK_IMPORT_URL"]["value"] == API_URL
        assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
        assert env["BULK_IMPORT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "bulk-import-test-import"
        assert {m["mountPath"] for m in s["volumeMounts"]} == {"/data", env["HOME"]["value"]}
    password = r.get("Secret", "bulk-import-test-import")["data"]["BULK_IMPORT_PASSWORD"]
    assert len(password) >= 40, "32 random characters, base64"


def test_the_import_test_reaches_the_api_through_its_network_policy():
    r = render_values({"api": {"networkPolicy": {"enabled": True}}})
    policy = r.get("NetworkPolicy", "bulk-import-api")
    open_rule = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert {p["port"] for rule in open_rule for p in rule["ports"]} == {8000}
    yaml.safe_dump(policy)  # well-formed
