"""Configuration: the environment contract with the binaries (env_expected.json), secrets only
in Secrets and only by reference, and the kind wiring (NodePorts ↔ kind-config.yaml ports,
in-cluster addresses ↔ the development Services)."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

import pytest

from conftest import (
    KIND_CONFIG_FILE,
    TESTS_DIR,
    Rendered,
    component_of,
    configmap_data,
    containers,
    load_json,
    load_yaml,
    pod_specs,
)

ENV = load_json(TESTS_DIR / "env_expected.json")
SECRET_KEYS = set(ENV["secret"])
SECRET_LOOKING_KEY = re.compile(r"(PASSWORD|_SECRET|SECRET_KEY|ACCESS_KEY|TOKEN|_URL_WITH_AUTH)$")


def secret_data(r: Rendered, name: str) -> dict[str, str]:
    doc = r.get("Secret", name)
    out = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    out.update(doc.get("stringData") or {})
    return out


def all_secret_values(r: Rendered) -> set[str]:
    values = set()
    for m in r.of_kind("Secret"):
        values |= set(secret_data(r, m.name).values())
    return {v for v in values if len(v) >= 6}


def effective_env(r: Rendered, container: dict) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, "secrets go by secretKeyRef, one key at a time"
        names |= set(configmap_data(r, source["configMapRef"]["name"]))
    return names


def extra_env_names(r: Rendered, component: str) -> set[str]:
    return {e["name"] for e in r.values.get(component, {}).get("extraEnv", [])}


@pytest.mark.parametrize("component", ["api", "operator", "migrations"])
def test_component_environment_matches_the_contract(rendered: Rendered, component):
    found = [
        (owner, spec) for owner, spec in pod_specs(rendered) if component_of(owner) == component
    ]
    if component == "migrations" and not rendered.values.get("migrations", {}).get("enabled", True):
        assert not found
        return
    assert len(found) == 1, found
    (container,) = found[0][1]["containers"]
    expected = set(ENV["secretKeys"][component]) | set(ENV["shared"]) | set(ENV[component])
    actual = effective_env(rendered, container) - extra_env_names(rendered, component)
    assert actual == expected, (
        f"missing: {sorted(expected - actual)}; unexpected: {sorted(actual - expected)}"
    )


def test_importer_pod_environment_matches_the_contract(rendered: Rendered):
    """What the operator hands importer pods: the ConfigMap and Secret it is told about."""
    operator = configmap_data(rendered, "bulk-import-operator-config")
    shared = configmap_data(rendered, operator["IMPORTER_CONFIGMAP_NAME"])
    assert set(shared) == set(ENV["shared"]) | set(ENV["importer"])
    secret_name = operator["IMPORTER_SECRET_NAME"]
    if rendered.find("Secret", secret_name):
        assert set(secret_data(rendered, secret_name)) == SECRET_KEYS
    else:
        assert secret_name == rendered.values.get("secrets", {}).get("existingSecret", "bulk-import-secrets")


def test_secret_keys_come_from_the_app_secret_by_reference(rendered: Rendered):
    secret_name = configmap_data(rendered, "bulk-import-operator-config")["IMPORTER_SECRET_NAME"]
    for owner, spec in pod_specs(rendered):
        if component_of(owner) not in {"api", "operator", "migrations"}:
            continue
        for c in containers(spec):
            env = {e["name"]: e for e in c.get("env", [])}
            for key in ENV["secretKeys"][component_of(owner)]:
                ref = env[key].get("valueFrom", {}).get("secretKeyRef")
                assert ref == {"name": secret_name, "key": key}, f"{owner!r}: {key}"


def test_no_secret_in_configmaps_or_literal_env(rendered: Rendered):
    secrets = all_secret_values(rendered)
    for m in rendered.of_kind("ConfigMap"):
        for key, value in (m.doc.get("data") or {}).items():
            assert key not in SECRET_KEYS, f"{m!r}: {key} is a secret"
            assert not SECRET_LOOKING_KEY.search(key), f"{m!r}: {key} looks like a secret"
            for secret in secrets:
                assert secret not in value, f"{m!r}: {key} holds a secret value"
    for owner, spec in pod_specs(rendered):
        for c in containers(spec):
            for e in c.get("env", []):
                if "value" in e:
                    assert not SECRET_LOOKING_KEY.search(e["name"]), f"{owner!r}: {e['name']}"
                    for secret in secrets:
                        assert secret not in e["value"], f"{owner!r}: {e['name']} holds a secret"
    for secret in secrets:
        assert secret not in rendered.notes, "NOTES.txt prints a secret"


def test_each_component_gets_only_the_secret_keys_it_uses():
    """JWT_SECRET can mint API tokens: only the API (which signs them) and the migrations
    (the API binary) get it; the operator and the importer never sign a token."""
    keys = ENV["secretKeys"]
    assert set(keys) == {"api", "operator", "migrations", "importer"}
    for component, names in keys.items():
        assert set(names) <= SECRET_KEYS, component
    assert "JWT_SECRET" not in keys["operator"] and "JWT_SECRET" not in keys["importer"]
    assert "REDIS_URL" not in keys["operator"], "the operator does not use Redis"


def test_generated_jwt_secret_is_long_enough():
    from conftest import SCENARIOS, deep_merge, render_values

    values = deep_merge(SCENARIOS["kind"], {"secrets": {"jwtSecret": ""}, "appEnv": "prod"})
    r = render_values(values)
    assert len(secret_data(r, "bulk-import")["JWT_SECRET"]) >= 32


def test_chart_sets_the_kubernetes_settings(rendered: Rendered):
    shared = configmap_data(rendered, "bulk-import-config")
    operator = configmap_data(rendered, "bulk-import-operator-config")
    assert shared["EXECUTOR"] == rendered.values.get("executor", "kubernetes")
    assert shared["KUBE_NAMESPACE"] == rendered.namespace
    assert shared["STORAGE"] == "s3"
    assert operator["IMPORTER_CONFIGMAP_NAME"] == "bulk-import-config"
    for key in ("JOB_BACKOFF_LIMIT", "JOB_ACTIVE_DEADLINE_SECONDS", "JOB_TTL_SECONDS_AFTER_FINISHED"):
        assert re.fullmatch(r"\d+", operator[key]), key
    assert operator["OBJECT_RETENTION"] in {"keep", "delete"}


def test_defaults_match_the_agreed_values():
    from conftest import render_scenario

    r = render_scenario("default")
    operator = configmap_data(r, "bulk-import-operator-config")
    assert operator["JOB_BACKOFF_LIMIT"] == "3"
    assert operator["JOB_ACTIVE_DEADLINE_SECONDS"] == "3600"
    assert operator["JOB_TTL_SECONDS_AFTER_FINISHED"] == "86400"
    assert (operator["IMPORTER_CPU_REQUEST"], operator["IMPORTER_CPU_LIMIT"]) == ("100m", "1")
    assert (operator["IMPORTER_MEMORY_REQUEST"], operator["IMPORTER_MEMORY_LIMIT"]) == ("64Mi", "256Mi")
    assert operator["OBJECT_RETENTION"] == "keep"
    assert operator["IMPORTJOB_TTL_SECONDS_AFTER_FINISHED"] == "604800", "7 days"
    assert operator["IMPORTER_IMAGE"] == "bulk-import:0.1.0"
    shared = configmap_data(r, "bulk-import-config")
    assert shared["APP_ENV"] == "prod" and shared["LOG_FORMAT"] == "json"
    api = r.get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "BIND_ADDR", "value": "0.0.0.0:8000"} in api["env"]
    operator_c = r.get("Deployment", "bulk-import-operator")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OPERATOR_BIND_ADDR", "value": "0.0.0.0:8080"} in operator_c["env"]


def api_env(r: Rendered) -> dict[str, str]:
    api = r.get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in api["env"]}


def test_trusted_proxies_are_set_from_the_values():
    from conftest import render_scenario, render_values

    assert api_env(render_scenario("default"))["TRUSTED_PROXIES"] == "", "none by default"
    r = render_values({"api": {"trustedProxies": ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]}})
    assert api_env(r)["TRUSTED_PROXIES"] == "10.0.0.0/8,fd00::/8,192.0.2.7"


def test_importer_image_can_differ_from_the_chart_image():
    from conftest import render_scenario

    operator = configmap_data(render_scenario("external-secret-created"), "bulk-import-operator-config")
    assert operator["IMPORTER_IMAGE"] == "registry.example.com/bulk-import-importer:1.2.3"
    account = render_scenario("external-secret-created").get("ServiceAccount", "bulk-import-importer")
    assert account["imagePullSecrets"] == [{"name": "registry-credentials"}]


# ---- kind ------------------------------------------------------------------------------------

def kind_port_map() -> dict[int, dict]:
    config = load_yaml(KIND_CONFIG_FILE)
    (node,) = config["nodes"]
    return {p["containerPort"]: p for p in node["extraPortMappings"]}


def node_port(r: Rendered, service: str, port_name: str) -> int:
    (port,) = [p for p in r.get("Service", service)["spec"]["ports"] if p["name"] == port_name]
    return port["nodePort"]


def test_kind_ports_reach_the_services_the_readme_uses(kind_rendered: Rendered):
    ports = kind_port_map()
    assert kind_rendered.get("Service", "bulk-import-api")["spec"]["type"] == "NodePort"
    wanted = {("bulk-import-api", "http"): 8000, ("bulk-import-minio", "s3"): 9000,
              ("bulk-import-minio", "console"): 9001}
    for (service, port_name), host_port in wanted.items():
        mapping = ports[node_port(kind_rendered, service, port_name)]
        assert mapping["hostPort"] == host_port, (service, port_name)
        assert mapping["listenAddress"] == "127.0.0.1", "development credentials: loopback only"
        assert mapping.get("protocol", "TCP") == "TCP"
    assert set(ports) == {node_port(kind_rendered, s, p) for s, p in wanted}


def test_kind_presigned_urls_are_signed_for_the_host_port(kind_rendered: Rendered):
    shared = configmap_data(kind_rendered, "bulk-import-config")
    minio_host_port = kind_port_map()[node_port(kind_rendered, "bulk-import-minio", "s3")]["hostPort"]
    assert shared["S3_PUBLIC_ENDPOINT_URL"] == f"http://localhost:{minio_host_port}"
    assert shared["S3_ENDPOINT_URL"] == "http://bulk-import-minio:9000"


def test_kind_secret_points_at_the_development_services(kind_rendered: Rendered):
    app = secret_data(kind_rendered, "bulk-import")
    deps = secret_data(kind_rendered, "bulk-import-dev-deps")
    services = {m.name: m.doc for m in kind_rendered.of_kind("Service")}

    db = urlsplit(app["DATABASE_URL"])
    assert db.scheme == "postgres" and db.hostname in services and db.port == 5432
    assert db.password == deps["POSTGRES_PASSWORD"]
    postgres_env = {
        e["name"]: e.get("value")
        for e in kind_rendered.get("Deployment", "bulk-import-postgres")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert db.username == postgres_env["POSTGRES_USER"] and db.path == "/" + postgres_env["POSTGRES_DB"]

    redis = urlsplit(app["REDIS_URL"])
    assert redis.scheme == "redis" and redis.hostname in services and redis.port == 6379

    assert app["S3_ACCESS_KEY"] == deps["MINIO_ROOT_USER"]
    assert app["S3_SECRET_KEY"] == deps["MINIO_ROOT_PASSWORD"]
    assert len(app["JWT_SECRET"]) >= 32


def test_kind_uses_the_locally_built_image(kind_rendered: Rendered):
    """docs/kubernetes.md: `docker build -t bulk-import:dev .` then `kind load docker-image bulk-import:dev`."""
    for owner, spec in pod_specs(kind_rendered):
        if component_of(owner) in {"api", "operator", "migrations"}:
            assert spec["containers"][0]["image"] == "bulk-import:dev", owner
            assert spec["containers"][0]["imagePullPolicy"] == "Never", owner
    operator = configmap_data(kind_rendered, "bulk-import-operator-config")
    assert operator["IMPORTER_IMAGE"] == "bulk-import:dev"
    assert operator["IMPORTER_IMAGE_PULL_POLICY"] == "Never"
