"""Every rendered manifest is valid against the Kubernetes JSON schemas (strict: unknown fields
are errors) of the version kind-config.yaml's node runs, and the release is the expected shape."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from conftest import (
    CRD_FILES,
    CRD_NAME,
    NAMESPACE,
    Rendered,
    chart,
    kind_node_version,
    render_scenario,
    render_values,
)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # Service names (RFC 1035)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def test_kind_node_version_is_supported_by_the_validator():
    version = kind_node_version()
    supported = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    assert version.rsplit(".", 1)[0] in supported, (
        f"kubernetes-validate {kubernetes_validate.version.__version__} has no schemas for "
        f"Kubernetes {version}; upgrade it in charts/tests/requirements.txt"
    )


def test_every_manifest_is_valid_for_the_kind_node_version(rendered: Rendered):
    version = kind_node_version()
    errors = []
    for m in rendered.manifests:
        if m.doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # not a Kubernetes API: test_monitoring.py checks the ServiceMonitors
        try:
            kubernetes_validate.validate(m.doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{m!r}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{m!r}: {e}")
    assert not errors, "\n".join(errors)


def test_names_namespaces_and_labels(rendered: Rendered):
    for m in rendered.manifests:
        meta = m.doc["metadata"]
        pattern = DNS_LABEL if m.kind in {"Service", "Job", "Deployment"} else DNS_SUBDOMAIN
        assert pattern.match(m.name) and len(m.name) <= 63, f"{m!r}: bad name"
        if m.kind in {"ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in meta, f"{m!r}: a {m.kind} has no namespace"
        else:
            assert meta.get("namespace") == rendered.namespace, f"{m!r}: namespace"
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == "bulk-import", m
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", m
        for key, value in labels.items():
            assert len(str(value)) <= 63, f"{m!r}: label {key} too long"


def test_no_duplicate_objects(rendered: Rendered):
    keys = [(m.kind, m.name) for m in rendered.manifests]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_default_install_contents():
    r = render_scenario("default")
    kinds = sorted((m.kind, m.name) for m in r.manifests)
    assert kinds == sorted([
        ("ConfigMap", "bulk-import-config"),
        ("ConfigMap", "bulk-import-operator-config"),
        ("Deployment", "bulk-import-api"),
        ("Deployment", "bulk-import-operator"),
        ("Job", "bulk-import-migrate"),
        ("PodDisruptionBudget", "bulk-import-api"),
        ("Role", "bulk-import-api"),
        ("Role", "bulk-import-operator"),
        ("RoleBinding", "bulk-import-api"),
        ("RoleBinding", "bulk-import-operator"),
        ("Service", "bulk-import-api"),
        ("Service", "bulk-import-operator-metrics"),
        ("ServiceAccount", "bulk-import-api"),
        ("ServiceAccount", "bulk-import-importer"),
        ("ServiceAccount", "bulk-import-operator"),
        ("NetworkPolicy", "bulk-import-importer"),
        ("ClusterRole", "bulk-import-importjobs-view"),
        ("ClusterRole", "bulk-import-importjobs-edit"),
        # The operator's read of the installed CRD at start (by name).
        ("ClusterRole", f"bulk-import-operator-{r.namespace}-crd"),
        ("ClusterRoleBinding", f"bulk-import-operator-{r.namespace}-crd"),
        # `helm test` hooks.
        ("Pod", "bulk-import-test-health"),
        ("Pod", "bulk-import-test-import"),
        ("ConfigMap", "bulk-import-test-import"),
        ("Secret", "bulk-import-test-import"),
    ])
    # No Secret but the test's own: the default is a Secret the operator of the cluster
    # manages (existingSecret).
    assert [m.name for m in r.of_kind("Secret")] == ["bulk-import-test-import"]
    assert r.get("Secret", "bulk-import-test-import")["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_kind_install_adds_the_development_services(kind_rendered: Rendered):
    for component in ("postgres", "redis", "minio"):
        kind_rendered.get("Deployment", f"bulk-import-{component}")
        kind_rendered.get("Service", f"bulk-import-{component}")
    kind_rendered.get("Job", "bulk-import-minio-bucket-1")
    kind_rendered.get("Secret", "bulk-import")
    kind_rendered.get("Secret", "bulk-import-dev-deps")


def test_migrations_run_as_a_helm_hook(kind_rendered: Rendered):
    job = kind_rendered.get("Job", "bulk-import-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["bulk-import-api", "migrate"]
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0


def test_migrations_can_be_switched_off():
    r = render_scenario("external-secret-created")
    assert r.find("Job", "bulk-import-migrate") is None


def test_minio_bucket_job_creates_the_configured_bucket(kind_rendered: Rendered):
    job = kind_rendered.get("Job", "bulk-import-minio-bucket-1")
    container = job["spec"]["template"]["spec"]["containers"][0]
    bucket = kind_rendered.get("ConfigMap", "bulk-import-config")["data"]["S3_BUCKET"]
    assert container["image"].startswith("minio/mc:")
    assert container["args"][-3:] == ["mb", "--ignore-existing", f"local/{bucket}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MC_HOST_local"]["value"] == (
        "http://$(MINIO_ROOT_USER):$(MINIO_ROOT_PASSWORD)@bulk-import-minio:9000"
    )
    names = [e["name"] for e in container["env"]]
    # $(VAR) only expands variables defined earlier in the list.
    assert names.index("MC_HOST_local") > names.index("MINIO_ROOT_PASSWORD")


def test_services_select_pods_and_ports_that_exist(rendered: Rendered):
    workloads = [m for m in rendered.manifests if m.kind == "Deployment"]
    for svc in rendered.of_kind("Service"):
        selector = svc.doc["spec"]["selector"]
        targets = [
            w for w in workloads
            if selector.items() <= w.doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"{svc!r} selects {targets}"
        port_names = {
            p["name"]
            for c in targets[0].doc["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in svc.doc["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{svc!r}: targetPort {port['targetPort']}"


def test_deployment_selectors_match_their_pods(rendered: Rendered):
    for d in rendered.of_kind("Deployment"):
        selector = d.doc["spec"]["selector"]["matchLabels"]
        labels = d.doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), d
        assert labels.get("app.kubernetes.io/component"), d


def test_no_cluster_scoped_objects_but_the_aggregated_roles(rendered: Rendered):
    """The only cluster-scoped objects are the ClusterRoles aggregated into view/edit/admin
    (test_rbac.py), which have no binding and so grant nothing by themselves, and the
    operator's read of the installed CRD by name (a ClusterRole and its binding)."""
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition",
                      "PersistentVolume", "StorageClass", "PriorityClass"}
    crd_read = f"bulk-import-operator-{rendered.namespace}-crd"
    found = [m for m in rendered.manifests if m.kind in cluster_scoped and m.name != crd_read]
    assert {m.kind for m in found} <= {"ClusterRole"}, found
    for m in found:
        labels = m.doc["metadata"]["labels"]
        assert labels.get("rbac.authorization.k8s.io/aggregate-to-edit") == "true", m
    off = render_values({"aggregatedRoles": {"enabled": False}})
    assert [m.name for m in off.of_kind("ClusterRole")] == [f"bulk-import-operator-{off.namespace}-crd"]


def test_notes_tell_how_to_reach_the_api_and_watch_imports():
    kind_notes = render_scenario("kind").notes
    assert "http://localhost:8000" in kind_notes
    assert "kubectl -n default get importjobs" in kind_notes
    assert "--for=condition=Complete importjob/" in kind_notes
    default_notes = render_scenario("default").notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/bulk-import-api 8000:8000" in default_notes
    assert "create secret generic bulk-import-secrets" in default_notes


# ---- the CRD (generated by the operator; validated when it is there) --------------------------

def _crd_docs():
    present = [p for p in CRD_FILES if p.exists()]
    if not present:
        pytest.skip(f"{CRD_NAME}.yaml is not generated yet (operator issue)")
    return [(p, d) for p in present for d in yaml.safe_load_all(p.read_text()) if d]


def test_crd_is_valid_and_has_the_agreed_names():
    version = kind_node_version()
    for path, crd in _crd_docs():
        kubernetes_validate.validate(crd, version, strict=True)
        assert crd["kind"] == "CustomResourceDefinition", path
        spec = crd["spec"]
        assert crd["metadata"]["name"] == CRD_NAME, path
        assert spec["group"] == "bulkimport.dev", path
        assert spec["scope"] == "Namespaced", path
        assert spec["names"]["kind"] == "ImportJob", path
        assert spec["names"]["plural"] == "importjobs", path
        assert "ij" in spec["names"].get("shortNames", []), path
        versions = {v["name"]: v for v in spec["versions"]}
        assert "v1alpha1" in versions, path
        assert versions["v1alpha1"]["served"] and versions["v1alpha1"]["storage"], path
        assert "status" in versions["v1alpha1"].get("subresources", {}), path


def test_chart_ships_the_crd_in_helms_crds_directory():
    chart_crd = CRD_FILES[0]
    if not chart_crd.exists():
        pytest.skip(f"charts/bulk-import/crds/{CRD_NAME}.yaml is not generated yet (operator issue)")
    names = [c["name"] for c in chart().crds]
    assert any(n.endswith(f"{CRD_NAME}.yaml") for n in names), names
