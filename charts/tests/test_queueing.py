"""Admission (README, Queueing): MAX_ACTIVE_IMPORTS derived from the stated Postgres connection
budget, or set explicitly; the per-organization limit and the importer's pool reach the
binaries."""

from __future__ import annotations

import helm_python
import pytest

from conftest import configmap_data, render_scenario, render_values

OPERATOR_CONFIG = "bulk-import-operator-config"
SHARED_CONFIG = "bulk-import-config"


def max_active(values: dict) -> int:
    return int(configmap_data(render_values(values), OPERATOR_CONFIG)["MAX_ACTIVE_IMPORTS"])


def test_the_default_is_what_100_connections_leave_for_importers():
    # (100 - 10 x 2 API replicas - 4 x 1 operator - 10 headroom) / (3 + 3) = 66 / 6
    assert int(configmap_data(render_scenario("default"), OPERATOR_CONFIG)["MAX_ACTIVE_IMPORTS"]) == 11


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"postgres": {"connectionBudget": 400}}, (400 - 20 - 4 - 10) // 6),
        ({"postgres": {"connectionBudget": 200, "connectionHeadroom": 0}}, (200 - 20 - 4) // 6),
        ({"api": {"replicas": 4}, "operator": {"replicas": 2}}, (100 - 40 - 8 - 10) // 6),
        ({"importer": {"dbPool": 7}}, (100 - 20 - 4 - 10) // 10),
        # An explicit value wins over the budget.
        ({"operator": {"maxActiveImports": 3}, "postgres": {"connectionBudget": 1000}}, 3),
    ],
)
def test_max_active_imports_follows_the_budget_formula(values, expected):
    assert max_active(values) == expected


def test_a_budget_that_leaves_no_importer_fails_the_install():
    with pytest.raises(helm_python.HelmError, match="connectionBudget 30 leaves no room"):
        render_values({"postgres": {"connectionBudget": 30}})


def test_the_per_organization_limit_and_the_importer_pool_reach_every_component():
    config = configmap_data(
        render_values({"operator": {"maxActiveImportsPerOrg": 2}, "importer": {"dbPool": 5}}),
        SHARED_CONFIG,
    )
    assert (config["MAX_ACTIVE_IMPORTS_PER_ORG"], config["IMPORTER_DB_POOL"]) == ("2", "5")
