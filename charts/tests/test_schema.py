"""values.schema.json rejects the obvious mistakes before anything reaches a cluster, and the
templates stop with a clear message where only a combination of values is wrong."""

from __future__ import annotations

import helm_python
import pytest

from conftest import SCENARIOS, chart, deep_merge, render_values

BAD_VALUES = {
    "unknown executor": ({"executor": "celery"}, "/executor"),
    "unknown app env": ({"appEnv": "production"}, "/appEnv"),
    "negative cpu limit": ({"api": {"resources": {"limits": {"cpu": "-1"}}}}, "/api/resources/limits/cpu"),
    "negative memory limit": ({"importer": {"resources": {"limits": {"memory": -64}}}}, "/importer/resources/limits/memory"),
    "memory without unit typo": ({"operator": {"resources": {"requests": {"memory": "64MB"}}}}, "/operator/resources/requests/memory"),
    "missing limits": ({"api": {"resources": {"limits": None}}}, "/api/resources"),
    "missing image": ({"image": None}, "image"),
    "empty image repository": ({"image": {"repository": ""}}, "/image/repository"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "zero batch size": ({"imports": {"batchSize": 0}}, "/imports/batchSize"),
    "negative slow ms": ({"imports": {"slowMs": -1}}, "/imports/slowMs"),
    "string where a number goes": ({"importer": {"backoffLimit": "three"}}, "/importer/backoffLimit"),
    "negative backoff limit": ({"importer": {"backoffLimit": -1}}, "/importer/backoffLimit"),
    "unknown object retention": ({"operator": {"objectRetention": "archive"}}, "/operator/objectRetention"),
    "negative importjob ttl": ({"operator": {"importJobTtlSecondsAfterFinished": -1}}, "/operator/importJobTtlSecondsAfterFinished"),
    "unknown jwt alg": ({"jwt": {"alg": "none"}}, "/jwt/alg"),
    "short jwt secret in prod": ({"secrets": {"jwtSecret": "tooshort"}}, "/secrets/jwtSecret"),
    "absolute key prefix": ({"s3": {"keyPrefix": "/data"}}, "/s3/keyPrefix"),
    "key prefix escaping": ({"s3": {"keyPrefix": "a/../b"}}, "/s3/keyPrefix"),
    "endpoint without scheme": ({"s3": {"endpointUrl": "minio:9000"}}, "/s3/endpointUrl"),
    "bad bucket name": ({"s3": {"bucket": "My_Bucket"}}, "/s3/bucket"),
    "nodePort out of range": ({"api": {"service": {"type": "NodePort", "nodePort": 8000}}}, "/api/service/nodePort"),
    "no secret at all": ({"secrets": {"existingSecret": ""}}, "/secrets/existingSecret"),
    "both secret sources": ({"secrets": {"create": True, "existingSecret": "mine"}}, "/secrets/existingSecret"),
    "database url of another kind": ({"secrets": {"databaseUrl": "mysql://x"}}, "/secrets/databaseUrl"),
    "minio without credentials": ({"minio": {"enabled": True}}, "/minio/rootUser"),
    "postgres without password": ({"postgres": {"enabled": True}}, "/postgres"),
    "password breaking the URL": ({"postgres": {"enabled": True, "password": "p@ss/word:1"}}, "/postgres/password"),
    "typo in a key": ({"api": {"replica": 3}}, "replica"),
    "typo at the top": ({"exector": "kubernetes"}, "exector"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects(case):
    values, where = BAD_VALUES[case]
    with pytest.raises(helm_python.HelmValuesError) as err:
        render_values(values)
    assert where in str(err.value), str(err.value)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_schema_accepts_the_scenarios(scenario):
    chart().validate_schema(SCENARIOS[scenario])


def test_schema_accepts_numbers_for_quantities():
    render_values({"api": {"resources": {"limits": {"cpu": 2, "memory": 268435456}}}})
    render_values({"importer": {"resources": {"requests": {"cpu": 0.5}}}})


REQUIRED_COMBINATIONS = {
    "created secret needs a database": (
        {"secrets": {"create": True, "existingSecret": "", "redisUrl": "redis://r:6379/0",
                     "s3AccessKey": "a", "s3SecretKey": "b"}},
        "secrets.databaseUrl is required",
    ),
    "created secret needs s3 keys": (
        {"secrets": {"create": True, "existingSecret": "", "databaseUrl": "postgres://d/b",
                     "redisUrl": "redis://r:6379/0"}},
        "secrets.s3AccessKey is required",
    ),
    "external s3 needs an endpoint": ({"s3": {"endpointUrl": ""}}, "s3.endpointUrl is required"),
}


@pytest.mark.parametrize("case", sorted(REQUIRED_COMBINATIONS))
def test_templates_stop_with_a_clear_message(case):
    values, message = REQUIRED_COMBINATIONS[case]
    with pytest.raises(helm_python.HelmRenderError) as err:
        render_values(values)
    assert message in str(err.value)


def test_kind_values_need_no_external_services():
    render_values(deep_merge(SCENARIOS["kind"], {"s3": {"endpointUrl": ""}}))
