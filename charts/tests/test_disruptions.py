"""Drains and network exposure (issue 12): the API's PodDisruptionBudget, a grace period
longer than its drain, and the optional NetworkPolicy."""

from __future__ import annotations

from conftest import SCENARIOS, deep_merge, render_scenario, render_values


def test_the_api_keeps_a_pod_through_drains():
    r = render_scenario("default")
    pdb = r.get("PodDisruptionBudget", "bulk-import-api")
    api = r.get("Deployment", "bulk-import-api")
    assert api["spec"]["replicas"] > 1
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]


def test_no_budget_for_a_single_replica_or_when_switched_off():
    one = render_values(deep_merge(SCENARIOS["default"], {"api": {"replicas": 1}}))
    assert not one.find("PodDisruptionBudget", "bulk-import-api"), "it would block every drain"
    off = render_values(
        deep_merge(SCENARIOS["default"], {"api": {"podDisruptionBudget": {"enabled": False}}})
    )
    assert not off.find("PodDisruptionBudget", "bulk-import-api")


def test_the_grace_period_covers_the_drain():
    spec = render_scenario("default").get("Deployment", "bulk-import-api")["spec"]["template"]["spec"]
    # The API drains in-flight requests for at most 30 s on SIGTERM (api/src/lib.rs).
    assert spec["terminationGracePeriodSeconds"] > 30


def test_the_network_policy_keeps_metrics_in():
    r = render_values(
        deep_merge(
            SCENARIOS["default"],
            {"api": {"networkPolicy": {"enabled": True, "metricsFrom": {"app": "prometheus"}}}},
        )
    )
    policy = r.get("NetworkPolicy", "bulk-import-api")
    rules = policy["spec"]["ingress"]
    api_port = [rule for rule in rules if rule["ports"][0]["port"] == 8000]
    metrics = [rule for rule in rules if rule["ports"][0]["port"] == 9090]
    assert api_port and "from" not in api_port[0], "the API's port is open"
    assert metrics[0]["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
    assert not render_scenario("default").find("NetworkPolicy", "bulk-import-api"), "off by default"
