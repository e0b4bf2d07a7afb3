"""Least privilege: the Roles grant exactly the calls in rbac_expected.json, to the right
ServiceAccounts, which the right pods use; nothing is cluster-wide but the operator's read of
the ImportJob CRD, by name."""

from __future__ import annotations

import pytest

from conftest import TESTS_DIR, Rendered, configmap_data, load_json, render_scenario

EXPECTED = load_json(TESTS_DIR / "rbac_expected.json")
COMPONENTS = ("api", "operator", "importer")


def triples(rules: list[dict]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a list of rules grants."""
    out = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb))
    return out


def expected_triples(component: str) -> set[tuple[str, str, str]]:
    return {
        (e["apiGroup"], e["resource"], verb)
        for e in EXPECTED[component]
        for verb in e["verbs"]
    }


def roles_by_component(r: Rendered) -> dict[str, dict]:
    roles = {}
    for m in r.of_kind("Role"):
        component = m.doc["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component not in roles, f"two Roles for {component}"
        roles[component] = m.doc
    return roles


def roles_expected(r: Rendered) -> set[str]:
    """Components with a Role: those that call the API server (not the importer)."""
    expected = {c for c in COMPONENTS if EXPECTED[c]}
    if r.values.get("executor") == "local":
        expected.discard("api")
    return expected


def test_expected_file_is_well_formed():
    assert set(EXPECTED) - {"_comment", "aggregated", "operatorCluster"} == set(COMPONENTS)
    assert EXPECTED["importer"] == [], "the importer calls no Kubernetes API"
    for component in COMPONENTS:
        for entry in EXPECTED[component]:
            assert set(entry) == {"apiGroup", "resource", "verbs"}, entry
            assert entry["verbs"] and "*" not in entry["verbs"], entry


@pytest.mark.parametrize("component", COMPONENTS)
def test_role_grants_exactly_the_expected_calls(rendered: Rendered, component):
    roles = roles_by_component(rendered)
    if component not in roles_expected(rendered):
        assert component not in roles, f"{component} must get no Role"
        return
    role = roles[component]
    granted = triples(role["rules"])
    expected = expected_triples(component)
    assert not granted - expected, f"{component} is granted more than it calls: {sorted(granted - expected)}"
    assert not expected - granted, f"{component} is missing calls it makes: {sorted(expected - granted)}"


def test_rules_have_no_wildcards_resource_names_or_urls(rendered: Rendered):
    for m in rendered.of_kind("Role"):
        for rule in m.doc["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"{m!r}: {rule}"
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{m!r}: wildcard in {field}"


def test_only_the_expected_roles_exist(rendered: Rendered):
    assert set(roles_by_component(rendered)) == roles_expected(rendered)


def test_each_binding_binds_its_role_to_its_own_service_account(rendered: Rendered):
    roles = {m.name for m in rendered.of_kind("Role")}
    accounts = {m.name for m in rendered.of_kind("ServiceAccount")}
    bindings = rendered.of_kind("RoleBinding")
    assert {b.name for b in bindings} == roles
    for b in bindings:
        ref = b.doc["roleRef"]
        assert ref == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": b.name}
        assert b.doc["subjects"] == [
            {"kind": "ServiceAccount", "name": b.name, "namespace": rendered.namespace}
        ], b
        assert b.name in accounts, f"{b!r}: no such ServiceAccount"


def test_pods_run_as_their_components_service_account(rendered: Rendered):
    fullname = "bulk-import"
    api = rendered.get("Deployment", f"{fullname}-api")["spec"]["template"]["spec"]
    operator = rendered.get("Deployment", f"{fullname}-operator")["spec"]["template"]["spec"]
    assert api["serviceAccountName"] == f"{fullname}-api"
    assert operator["serviceAccountName"] == f"{fullname}-operator"
    # The operator gives importer pods the importer's account, which is bound to nothing.
    config = configmap_data(rendered, f"{fullname}-operator-config")
    assert config["IMPORTER_SERVICE_ACCOUNT"] == f"{fullname}-importer"
    rendered.get("ServiceAccount", f"{fullname}-importer")
    assert not rendered.find("RoleBinding", f"{fullname}-importer")


def test_importer_and_api_cannot_touch_jobs_pods_or_secrets():
    """A spot check in plain words, independent of the expected file."""
    roles = roles_by_component(render_scenario("kind"))
    assert "importer" not in roles, "the importer gets no Role at all"
    resources = {resource for _, resource, _ in triples(roles["api"]["rules"])}
    assert resources.isdisjoint({"jobs", "pods", "secrets", "configmaps", "leases"})
    for component in roles:
        resources = {resource for _, resource, _ in triples(roles[component]["rules"])}
        assert "secrets" not in resources, f"{component} must not read Secrets through the API"


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


@pytest.mark.parametrize("role,aggregates_to", [
    ("view", {"view", "edit", "admin"}),
    ("edit", {"edit", "admin"}),
])
def test_aggregated_cluster_roles_let_namespace_users_read_and_create_importjobs(
    rendered: Rendered, role, aggregates_to
):
    cluster_role = rendered.get("ClusterRole", f"bulk-import-importjobs-{role}")
    labels = cluster_role["metadata"]["labels"]
    assert {k[len(AGGREGATE):] for k, v in labels.items() if k.startswith(AGGREGATE) and v == "true"} \
        == aggregates_to
    expected = {
        (e["apiGroup"], e["resource"], verb)
        for e in EXPECTED["aggregated"][role]
        for verb in e["verbs"]
    }
    assert triples(cluster_role["rules"]) == expected
    # Nobody but the operator writes the status; nothing else (Jobs, pods, Secrets) is shared.
    assert {r for _, r, _ in expected} <= {"importjobs", "importjobs/status"}
    assert not any(r == "importjobs/status" and v not in {"get", "list", "watch"} for _, r, v in expected)
    bindings = rendered.of_kind("ClusterRoleBinding")
    assert [b.name for b in bindings] == [operator_crd_role_name(rendered)]


def test_edit_users_can_create_and_delete_importjobs_and_view_users_only_read():
    r = render_scenario("default")
    view = triples(r.get("ClusterRole", "bulk-import-importjobs-view")["rules"])
    edit = triples(r.get("ClusterRole", "bulk-import-importjobs-edit")["rules"])
    for verb in ("create", "delete", "patch"):
        assert ("bulkimport.dev", "importjobs", verb) in edit
        assert ("bulkimport.dev", "importjobs", verb) not in view
    for verb in ("get", "list", "watch"):
        assert ("bulkimport.dev", "importjobs", verb) in view


def test_operator_may_set_block_owner_deletion():
    """OwnerReferencesPermissionEnforcement: blockOwnerDeletion on the Job's owner reference
    needs update on the owner's finalizers subresource."""
    role = roles_by_component(render_scenario("default"))["operator"]
    assert ("bulkimport.dev", "importjobs/finalizers", "update") in triples(role["rules"])


def operator_crd_role_name(r: Rendered) -> str:
    return f"bulk-import-operator-{r.namespace}-crd"


def test_the_operator_reads_only_its_crd_cluster_wide(rendered: Rendered):
    """The start check reads the installed CRD: get, on that one name, bound to the operator."""
    name = operator_crd_role_name(rendered)
    role = rendered.get("ClusterRole", name)
    expected = EXPECTED["operatorCluster"]
    assert len(role["rules"]) == len(expected)
    for rule, e in zip(role["rules"], expected):
        assert rule == {
            "apiGroups": [e["apiGroup"]],
            "resources": [e["resource"]],
            "resourceNames": e["resourceNames"],
            "verbs": e["verbs"],
        }, rule
    binding = rendered.get("ClusterRoleBinding", name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "bulk-import-operator", "namespace": rendered.namespace}
    ]
