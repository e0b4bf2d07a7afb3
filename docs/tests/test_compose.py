"""compose.yaml, checked without a Docker engine: valid against the Compose Specification's
JSON schema (the copy `check-jsonschema` ships), every variable it gives our image is one the
API reads, its commands exist, its services wait for what they need, and it runs the chart's
images of Postgres, Redis and MinIO."""

import copy
import json
from pathlib import Path
from urllib.parse import urlparse

import check_jsonschema
import jsonschema
import pytest
import yaml

from docscheck import ROOT, env_section_defaults

SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
OUR_IMAGE = "bulk-import:dev"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def schema_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def problems(compose: dict, facts) -> list[str]:
    """Everything wrong with a compose document, beyond its schema."""
    out = []
    services = compose.get("services", {})
    ours = {name: s for name, s in services.items() if s.get("image") == OUR_IMAGE}
    if not ours:
        out.append(f"no service runs {OUR_IMAGE}")
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            if dependency not in services:
                out.append(f"{name} depends on a missing service {dependency}")
    for name, service in ours.items():
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        if context is None or not (ROOT / context / "Dockerfile").is_file():
            out.append(f"{name}: not built from the repository's Dockerfile")
        env = service.get("environment", {})
        api_vars = env_section_defaults(facts.trees["bulk-import-api"].help)
        for var in env:
            if var not in api_vars:
                out.append(f"{name}: the API does not read {var}")
        command = service.get("command", [])
        binary, args = command[0], command[1:]
        node = facts.trees.get(binary)
        if node is None or (args and args[0] not in node.commands):
            out.append(f"{name}: no command {' '.join(command)}")
    return out


def test_compose_yaml_is_valid_against_the_compose_specification(compose):
    errors = schema_errors(compose)
    assert not errors, "\n".join(errors)


def test_compose_yaml_runs_our_image_with_variables_the_api_reads(compose, facts):
    assert not problems(compose, facts)
    api, migrate = compose["services"]["api"], compose["services"]["migrate"]
    assert migrate["command"] == ["bulk-import-api", "migrate"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert compose["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_yaml_wires_its_services_together(compose):
    services = compose["services"]
    env = services["api"]["environment"]
    postgres = services["postgres"]["environment"]
    db = urlparse(env["DATABASE_URL"])
    assert (db.hostname, db.username, db.password, db.path.lstrip("/")) == (
        "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
    )
    assert urlparse(env["REDIS_URL"]).hostname == "redis"
    minio = services["minio"]["environment"]
    assert (env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert urlparse(env["S3_ENDPOINT_URL"]).hostname == "minio"
    bucket = services["minio-bucket"]
    assert bucket["command"][-1] == f"local/{env['S3_BUCKET']}"
    mc = urlparse(bucket["environment"]["MC_HOST_local"])
    assert (mc.username, mc.password, mc.hostname) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"], "minio")
    # Presigned links are signed for the published MinIO port, the API listens on its own.
    assert env["S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000"
    assert any(p.endswith(":9000:9000") for p in services["minio"]["ports"])
    port = env["BIND_ADDR"].rsplit(":", 1)[1]
    assert any(p.endswith(f":{port}") for p in services["api"]["ports"])
    assert env["EXECUTOR"] == "local"


def test_compose_yaml_uses_the_charts_images(compose):
    values = yaml.safe_load((ROOT / "charts" / "bulk-import" / "values.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == values["postgres"]["image"]
    assert services["redis"]["image"] == values["redis"]["image"]
    assert services["minio"]["image"] == values["minio"]["image"]
    assert services["minio-bucket"]["image"] == values["minio"]["mcImage"]


def test_the_checks_catch_a_broken_compose_file(compose, facts):
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["ports"] = {"8000": 8000}  # a mapping where a list belongs
    broken["services"]["api"]["restart_policy"] = "always"  # not a Compose key
    assert len(schema_errors(broken)) >= 2
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["environment"] = {**compose["services"]["api"]["environment"], "MAX_UPLOADS_BYTES": "1"}
    broken["services"]["migrate"]["command"] = ["bulk-import-api", "migrat"]
    broken["services"]["api"]["depends_on"] = {"postgre": {"condition": "service_healthy"}}
    found = problems(broken, facts)
    assert "api: the API does not read MAX_UPLOADS_BYTES" in found
    assert "migrate: no command bulk-import-api migrat" in found
    assert "api depends on a missing service postgre" in found
