"""deploy/: every overlay builds with kustomize, every object is valid Kubernetes, nothing
runs as root, the pool's adapters cannot drift from TGI's LORA_ADAPTERS, and the
gateway starts exactly as its Deployment runs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from gateway.registry.models import parse_lora_adapters
from gateway.store.files import load_policies
from tests.integration.harness import wait_ready
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir())
K8S_VERSION = "1.32"
CUSTOM_RESOURCES = {"monitoring.googleapis.com/v1": {"PodMonitoring"}}


def build(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay, as objects."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to build the manifests"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return build(request.param)


def _pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _one(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, (kind, prefix, [o["metadata"]["name"] for o in found])
    return found[0]


def test_every_object_validates_against_the_kubernetes_schemas(
    objects: list[dict[str, Any]],
) -> None:
    for obj in objects:
        if obj["kind"] in CUSTOM_RESOURCES.get(obj["apiVersion"], ()):
            assert obj["spec"]["selector"]["matchLabels"] and obj["spec"]["endpoints"]
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_a_misspelled_field_would_be_caught() -> None:
    deployment = _one(build("sim"), "Deployment", "lora-gateway")
    deployment["spec"]["template"]["spec"]["containers"][0]["resorces"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_nothing_runs_as_root_and_every_container_has_resources_and_probes(
    objects: list[dict[str, Any]],
) -> None:
    for name, pod in _pods(objects):
        pod_context = pod.get("securityContext", {})
        for container in pod["containers"]:
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, name
            assert context.get("runAsUser", 0) != 0, name
            assert context.get("allowPrivilegeEscalation") is False, name
            resources = container["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"], name
            assert "readinessProbe" in container and "livenessProbe" in container, name


def test_secrets_are_referenced_never_inlined(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    gateway = _one(objects, "Deployment", "lora-gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in gateway["containers"][0]["env"]}
    for name in ("LGW_ADMIN_TOKEN", "LGW_KEY_PEPPER"):
        assert "secretKeyRef" in env[name]["valueFrom"]


def test_the_admin_port_and_redis_are_internal(objects: list[dict[str, Any]]) -> None:
    admin = _one(objects, "Service", "lora-gateway-admin")
    assert admin["spec"].get("type", "ClusterIP") == "ClusterIP"
    policy = _one(objects, "NetworkPolicy", "lora-gateway")
    admin_rules = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8081]
    assert admin_rules and all(r.get("from") for r in admin_rules)
    redis_policy = _one(objects, "NetworkPolicy", "redis")
    assert redis_policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "lora-gateway"}}}
    ]


def test_the_pools_adapters_equal_tgis_lora_adapters(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    tgi = _one(objects, "Deployment", "tgi-")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in tgi["env"]}
    policies = _one(objects, "ConfigMap", "lora-gateway-policies")["data"]
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in policies.items():
        (folder / name).write_text(text)
    pool = load_policies(folder).pools[0]
    assert list(pool.adapters) == env["LORA_ADAPTERS"].split(",")
    assert pool.adapter_ids == frozenset(parse_lora_adapters(env["LORA_ADAPTERS"]))
    assert pool.base_model == env["MODEL_ID"]
    example = load_policies(ROOT / "policies" / "examples").pools[0]
    assert example.adapters == pool.adapters  # the demo and the cluster serve the same


def _dockerfile_entrypoint() -> list[str]:
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return list(yaml.safe_load(line.removeprefix("ENTRYPOINT ")))
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def test_the_gateway_starts_as_its_deployment_runs_it(redis_url: str, tmp_path: Path) -> None:
    objects = build("sim")
    container = _one(objects, "Deployment", "lora-gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]
    command = container.get("command") or _dockerfile_entrypoint()
    assert command == ["lora-gateway"]
    config = _one(objects, "ConfigMap", "lora-gateway-config")["data"]
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, text in _one(objects, "ConfigMap", "lora-gateway-policies")["data"].items():
        (policies / name).write_text(text)
    secrets = {"admin-token": "deploy-test-admin-token", "key-pepper": "deploy-test-pepper"}
    env = {**config}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secrets[ref["key"]] if ref else item["value"]
    port, admin_port = free_port(), free_port()
    # Only what a test machine must change: where to listen, where Redis and files are.
    env |= {
        "LGW_PORT": str(port),
        "LGW_ADMIN_PORT": str(admin_port),
        "LGW_HOST": "127.0.0.1",
        "LGW_REDIS_URL": redis_url,
        "LGW_POLICIES": str(policies),
    }
    executable = str(Path(sys.executable).with_name(command[0]))
    process = subprocess.Popen(
        [executable, *container["args"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        admin = f"http://127.0.0.1:{admin_port}/admin/v1"
        headers = {"Authorization": f"Bearer {secrets['admin-token']}"}
        key = httpx.post(
            f"{admin}/teams/analytics/keys", json={"name": "smoke"}, headers=headers
        ).json()["key"]
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert sorted(m["id"] for m in models["data"]) == ["chat", "sql"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run(
        [hadolint, str(ROOT / "deploy" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
