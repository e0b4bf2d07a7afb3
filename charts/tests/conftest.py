"""Shared fixtures for the chart tests: the chart rendered with the real Helm library
(helm-python-sdk binds Helm v4's Go SDK) for a few value sets, parsed into manifests.

No cluster is involved: rendering is offline (`lookup` returns nothing), so these tests prove
what the chart produces, not how a cluster runs it.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parents[1]
CHART_DIR = REPO / "charts" / "bulk-import"
KIND_VALUES_FILE = CHART_DIR / "values-kind.yaml"
KIND_CONFIG_FILE = REPO / "kind-config.yaml"
CRD_NAME = "importjobs.bulkimport.dev"
CRD_FILES = [CHART_DIR / "crds" / f"{CRD_NAME}.yaml", REPO / "crds" / f"{CRD_NAME}.yaml"]

RELEASE = "bulk-import"
NAMESPACE = "imports"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's coalescing for plain maps: override wins, nested maps merge."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kind_values() -> dict:
    return load_yaml(KIND_VALUES_FILE)


def kind_node_version() -> str:
    """The Kubernetes version of the node image in kind-config.yaml, e.g. "1.37.0"."""
    config = load_yaml(KIND_CONFIG_FILE)
    images = {node["image"] for node in config["nodes"]}
    assert len(images) == 1, f"kind-config.yaml: expected one node image, got {images}"
    match = re.fullmatch(r"kindest/node:v(\d+\.\d+\.\d+)(@sha256:[0-9a-f]{64})?", images.pop())
    assert match, "kind-config.yaml: node image must be kindest/node:vX.Y.Z[@sha256:...]"
    return match.group(1)


# Value sets the chart is rendered with. Each is a user-supplied values dict (what `-f`/`--set`
# would give), merged by Helm with values.yaml.
SCENARIOS: dict[str, dict] = {
    # values.yaml alone: production shape, existing Secret, external Postgres/Redis/S3.
    "default": {},
    # The kind install of docs/kubernetes.md.
    "kind": kind_values(),
    # kind with imports running inside the API pods: the API gets no Kubernetes API access.
    "kind-local-executor": deep_merge(kind_values(), {"executor": "local"}),
    # Production with a chart-created Secret, pull secrets, a custom importer image and more.
    "external-secret-created": {
        "image": {"repository": "registry.example.com/bulk-import", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "s3": {
            "endpointUrl": "https://s3.eu-west-1.amazonaws.com",
            "publicEndpointUrl": "https://files.example.com",
            "region": "eu-west-1",
            "keyPrefix": "tenant-a/",
        },
        "secrets": {
            "create": True,
            "existingSecret": "",
            "databaseUrl": "postgres://bulk:pg-pass-0123@db.example.com:5432/bulk",
            "redisUrl": "rediss://:redis-pass-0123@cache.example.com:6380/0",
            "s3AccessKey": "AKIAEXAMPLEACCESSKEY",
            "s3SecretKey": "example-s3-secret-key-0123456789",
            "jwtSecret": "x" * 40,
        },
        "importer": {"image": {"repository": "registry.example.com/bulk-import-importer"}},
        "operator": {"replicas": 2, "objectRetention": "delete", "metricsService": {"enabled": False}},
        "migrations": {"enabled": False},
        "api": {"service": {"type": "LoadBalancer"}, "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
    },
    # kind with Prometheus Operator scraping and the API's NetworkPolicy on.
    "kind-service-monitor": deep_merge(kind_values(), {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                       "labels": {"release": "prometheus"}}},
        "api": {"networkPolicy": {"enabled": True}},
    }),
}

# The namespace each scenario is rendered into (docs/kubernetes.md installs kind into "default").
SCENARIO_NAMESPACE = {"kind": "default", "kind-local-executor": "default",
                      "kind-service-monitor": "default"}


@dataclass(frozen=True)
class Manifest:
    template: str
    doc: dict

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    def __repr__(self) -> str:  # shows up in assertion messages and test ids
        return f"{self.kind}/{self.name} ({self.template})"


@dataclass(frozen=True)
class Rendered:
    scenario: str
    values: dict
    namespace: str
    manifests: tuple[Manifest, ...]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [m.doc for m in self.manifests if m.kind == kind and m.name == name]
        assert len(found) == 1, f"{self.scenario}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict | None:
        found = [m.doc for m in self.manifests if m.kind == kind and m.name == name]
        return found[0] if found else None


@functools.lru_cache(maxsize=None)
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART_DIR))


def render_values(values: dict, namespace: str = NAMESPACE, scenario: str = "adhoc") -> Rendered:
    out = chart().render(copy.deepcopy(values), name=RELEASE, namespace=namespace)
    manifests: list[Manifest] = []
    notes = ""
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(template, doc))
    return Rendered(scenario, values, namespace, tuple(manifests), notes)


@functools.lru_cache(maxsize=None)
def render_scenario(name: str) -> Rendered:
    namespace = SCENARIO_NAMESPACE.get(name, NAMESPACE)
    return render_values(SCENARIOS[name], namespace=namespace, scenario=name)


@pytest.fixture(params=sorted(SCENARIOS))
def rendered(request) -> Rendered:
    return render_scenario(request.param)


@pytest.fixture
def kind_rendered() -> Rendered:
    return render_scenario("kind")


# ---- pod-spec helpers -----------------------------------------------------------------------

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(r: Rendered) -> list[tuple[Manifest, dict]]:
    """Every pod spec the release creates: (owning manifest, pod spec)."""
    specs = []
    for m in r.manifests:
        if m.kind in POD_TEMPLATE_KINDS:
            specs.append((m, m.doc["spec"]["template"]["spec"]))
        elif m.kind == "CronJob":
            specs.append((m, m.doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif m.kind == "Pod":
            specs.append((m, m.doc["spec"]))
    return specs


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def component_of(m: Manifest) -> str | None:
    return m.doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def fullname() -> str:
    return RELEASE  # the release name contains the chart name, so it is the prefix as is


def configmap_data(r: Rendered, name: str) -> dict:
    return r.get("ConfigMap", name).get("data") or {}
