"""Every pod the chart creates runs with the restricted Pod Security profile, requests and limits,
and a service account token only where it calls the Kubernetes API."""

from __future__ import annotations

from conftest import Rendered, component_of, containers, pod_specs

OUR_IMAGE_COMPONENTS = {"api", "operator", "migrations"}


def test_every_pod_is_restricted(rendered: Rendered):
    specs = pod_specs(rendered)
    assert specs
    for owner, spec in specs:
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True, owner
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, owner
        assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0, owner
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), f"{owner!r}: {forbidden}"
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, f"{owner!r}: hostPath volume"
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            where = f"{owner!r} container {c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities") == {"drop": ["ALL"]}, where
            assert not sc.get("privileged"), where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, where


def test_our_image_runs_as_user_10001(rendered: Rendered):
    for owner, spec in pod_specs(rendered):
        if component_of(owner) in OUR_IMAGE_COMPONENTS:
            assert spec["securityContext"]["runAsUser"] == 10001, owner
            assert spec["securityContext"]["runAsGroup"] == 10001, owner


def test_every_container_has_requests_and_limits(rendered: Rendered):
    for owner, spec in pod_specs(rendered):
        for c in containers(spec):
            resources = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resources.get(kind, {}).get(resource), (
                        f"{owner!r} container {c['name']}: no {kind}.{resource}"
                    )


def test_service_account_tokens_only_where_the_api_server_is_called(rendered: Rendered):
    kubernetes_executor = rendered.values.get("executor", "kubernetes") == "kubernetes"
    needs_token = {"operator": True, "api": kubernetes_executor}
    for owner, spec in pod_specs(rendered):
        component = component_of(owner)
        assert "automountServiceAccountToken" in spec, f"{owner!r}: set it explicitly"
        assert spec["automountServiceAccountToken"] is needs_token.get(component, False), owner
    accounts = {m.name: m.doc for m in rendered.of_kind("ServiceAccount")}
    assert accounts["bulk-import-api"]["automountServiceAccountToken"] is kubernetes_executor
    assert accounts["bulk-import-operator"]["automountServiceAccountToken"] is True
    # Importer pods call no Kubernetes API (the operator mirrors their progress from Postgres):
    # no token in the pods that parse untrusted files.
    assert accounts["bulk-import-importer"]["automountServiceAccountToken"] is False


def test_api_and_operator_probes(rendered: Rendered):
    api = rendered.get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]["containers"][0]
    operator = rendered.get("Deployment", "bulk-import-operator")["spec"]["template"]["spec"]["containers"][0]
    for c, port in ((api, 8000), (operator, 8080)):
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["livenessProbe"]["httpGet"]["path"] == "/health", c["name"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready", c["name"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert ports[c[probe]["httpGet"]["port"]] == port, (c["name"], probe)
    assert api["command"] == ["bulk-import-api"]
    assert operator["command"] == ["bulk-import-operator"]


def test_dependency_pods_have_probes(kind_rendered: Rendered):
    for name in ("postgres", "redis", "minio"):
        c = kind_rendered.get("Deployment", f"bulk-import-{name}")["spec"]["template"]["spec"]["containers"][0]
        assert c.get("readinessProbe") and c.get("livenessProbe"), name


def test_writable_paths_are_emptydirs(kind_rendered: Rendered):
    """Read-only root filesystems: whatever a process writes to is a mounted emptyDir."""
    needed = {
        "bulk-import-api": {"/tmp"},
        "bulk-import-postgres": {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"},
        "bulk-import-redis": {"/data"},
        "bulk-import-minio": {"/data", "/tmp"},
    }
    for name, paths in needed.items():
        spec = kind_rendered.get("Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert paths <= set(mounts), name
        for path in paths:
            assert "emptyDir" in volumes[mounts[path]], (name, path)
