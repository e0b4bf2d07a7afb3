"""kind-config.yaml, the Dockerfile and .dockerignore agree with the workspace and the chart."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import KIND_CONFIG_FILE, REPO, kind_node_version, load_yaml, render_scenario

DOCKERFILE = REPO / "Dockerfile"


def workspace_binaries() -> dict[str, list[str]]:
    """package name -> its binary names, for every workspace member."""
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]
    out = {}
    for member in workspace["members"]:
        manifest = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        bins = [b["name"] for b in manifest.get("bin", [])]
        if not bins and (REPO / member / "src" / "main.rs").exists():
            bins = [name]
        out[name] = bins
    return out


def test_kind_config_is_a_single_pinned_node():
    config = load_yaml(KIND_CONFIG_FILE)
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = config["nodes"]
    assert node["role"] == "control-plane"
    assert re.search(r"@sha256:[0-9a-f]{64}$", node["image"]), "pin the node image by digest"
    major, minor, _ = (int(x) for x in kind_node_version().split("."))
    assert (major, minor) >= (1, 31)


def test_dockerfile_builds_the_binaries_of_the_workspace():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert stages[0][0].startswith("rust:1.") and "-bookworm@" in stages[0][0]
    assert stages[-1][0].startswith("gcr.io/distroless/cc-debian12:nonroot@")
    packages = set(re.findall(r"\s-p\s+([a-z][\w-]*)", text))
    binaries = workspace_binaries()
    # The CLI too: the chart's `helm test` import runs it.
    assert packages == {"bulk-import-api", "bulk-import-operator", "bulk-import-importer",
                        "bulk-import-cli"}
    assert packages <= set(binaries), f"not workspace packages: {packages - set(binaries)}"
    assert "--locked" in text and "--release" in text
    for package in packages:
        for binary in binaries[package]:
            assert f"target/release/{binary}" in text, binary


def test_dockerfile_base_images_are_pinned_by_digest():
    """Issue 12: a floating base tag changes what ships without a commit."""
    text = DOCKERFILE.read_text()
    images = re.findall(r"^FROM\s+(\S+)", text, re.M | re.I)
    assert len(images) == 2, images
    for image in images:
        assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", image), f"pin {image} by tag and digest"


def test_dockerfile_runtime_is_slim_and_non_root():
    text = DOCKERFILE.read_text()
    runtime = text[text.rfind("FROM "):]
    # distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no package manager,
    # so nothing in the runtime stage may RUN (there is nothing to run it with).
    assert "distroless/cc-debian12:nonroot@" in runtime
    assert not re.search(r"^RUN ", runtime, re.M)
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "COPY --from=builder /out/ /usr/local/bin/" in runtime


def test_the_image_defaults_to_prod():
    """Issue 24: a bare `docker run` of the image must not sign tokens with the public
    development secret; APP_ENV=prod makes the API refuse to start without JWT_SECRET and
    PUBLIC_API_URL (api/tests/it/bounds.rs starts the binary that way)."""
    text = DOCKERFILE.read_text()
    runtime = text[text.rfind("FROM "):]
    assert re.search(r"^ENV APP_ENV=prod\b", runtime, re.M)


def test_one_http_and_tls_stack():
    """Issue 12: aws-sdk-s3's default features pulled hyper 0.14 and rustls 0.21 (its legacy
    client) and aws-lc-rs beside ring. Cargo.lock must hold one hyper, one rustls and ring as
    the only TLS crypto provider."""
    lock = tomllib.loads((REPO / "Cargo.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    for name in ("hyper", "rustls", "hyper-rustls", "tokio-rustls"):
        assert len(versions.get(name, ())) <= 1, f"{name}: {sorted(versions[name])}"
    assert all(v.startswith("1.") for v in versions["hyper"]), versions["hyper"]
    assert all(v.startswith("0.23.") for v in versions["rustls"]), versions["rustls"]
    for name in ("aws-lc-rs", "aws-lc-sys", "openssl", "native-tls"):
        assert name not in versions, f"{name} is in Cargo.lock"
    assert "serde_yaml" not in versions, "serde_yaml is deprecated"


def test_k8s_openapi_models_the_charts_oldest_kubernetes():
    """Issue 12: the Kubernetes API version k8s-openapi is built for must be the chart's
    kubeVersion floor, so no field newer than the oldest supported cluster can be used."""
    spec = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["dependencies"]["k8s-openapi"]
    (version_feature,) = [f for f in spec["features"] if re.fullmatch(r"v\d+_\d+", f)]
    built = tuple(int(x) for x in version_feature[1:].split("_"))
    chart = load_yaml(REPO / "charts" / "bulk-import" / "Chart.yaml")
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)\.\d+(-0)?", chart["kubeVersion"])
    assert floor, chart["kubeVersion"]
    assert (int(floor.group(1)), int(floor.group(2))) == built
    major, minor, _ = (int(x) for x in kind_node_version().split("."))
    assert (major, minor) >= built, "the kind node must run a supported Kubernetes"


def test_chart_commands_are_binaries_the_image_has():
    binaries = {b for bins in workspace_binaries().values() for b in bins}
    r = render_scenario("default")
    for m in r.manifests:
        if m.kind in {"Deployment", "Job"} and m.doc["metadata"]["labels"]["app.kubernetes.io/component"] in {"api", "operator", "migrations"}:
            command = m.doc["spec"]["template"]["spec"]["containers"][0]["command"]
            assert command[0] in binaries, (m, command)


def test_dockerignore_keeps_what_cargo_needs():
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = ["Cargo.toml", "Cargo.lock", "migrations", *tomllib.loads(
        (REPO / "Cargo.toml").read_text())["workspace"]["members"]]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p.rstrip("/")) for p in patterns), path
    for path in ("target", ".git", ".local"):
        assert any(fnmatch.fnmatch(path, p.rstrip("/")) for p in patterns), path


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_is_clean():
    binary = hadolint()
    assert binary, "hadolint is missing: pip install -r charts/tests/requirements.txt"
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_binaries_carry_no_debug_info():
    """The image copies target/release binaries: the release profile must not put debug info
    in them (issue 12: three ~200 MB binaries)."""
    import tomllib

    profile = tomllib.loads((REPO / "Cargo.toml").read_text())["profile"]["release"]
    assert profile.get("debug") in (False, 0, "none"), profile
    assert profile.get("strip") in ("debuginfo", "symbols", True), profile
