"""deploy/kubernetes/: every manifest is valid against the Kubernetes API schemas, and the
manifests agree with each other, with the image and with the service's settings.

The schemas are the ones the `kubernetes-validate` package ships (offline, strict: unknown
fields are errors), for the oldest Kubernetes these manifests support (1.30: CronJob
timeZone, autoscaling/v2, policy/v1) and the newest the package knows. No cluster is needed,
and none was used: see docs/deployment.md "Kubernetes" for what was and was not run.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.common.settings import ENV_VARIABLES, Settings
from tests.deployment.test_deployment_files import (
    INFER,
    dockerfile_env,
    gunicorn_command,
    option,
    services,
)
from tests.support.environment import REPOSITORY

KUBE = REPOSITORY / "deploy" / "kubernetes"
OLDEST = "1.30"
VERSIONS = (OLDEST, kubernetes_validate.latest_version())
SECRET = "descriptor-infer-secrets"
# docs/deployment.md "Scaling replicas": ~950 MB per replica with two recognitions in flight at
# 100,000 printings (the second line reader included); one recognition keeps about one core
# busy.
REPLICA_PEAK_BYTES = 0.955e9  # scale benchmark at 100k, 2026-12-07 (afternoon run)


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return data


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object of every resource the kustomization lists."""
    found = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((KUBE / name).read_text()):
            if document:
                found.append((name, document))
    return found


def generated_secret() -> dict[str, Any]:
    """The Secret kustomize's secretGenerator makes from secrets.env (its example here)."""
    data = {}
    for line in (KUBE / "secrets.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            data[key] = value
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
            "type": "Opaque", "stringData": data}


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return found


def config() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap")["data"]
    return data


def pod_spec(kind: str) -> dict[str, Any]:
    workload = one(kind)
    if kind == "CronJob":
        spec: dict[str, Any] = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = workload["spec"]["template"]["spec"]
    return spec


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (`1300Mi`, `2Gi`, `500m`, `2`) as a number of bytes or cores."""
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9,
             "m": 1e-3}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    generator = kustomization()["secretGenerator"]
    assert [item["name"] for item in generator] == [SECRET]
    assert generator[0]["envs"] == ["secrets.env"]
    assert (KUBE / "secrets.env.example").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/kubernetes/secrets.env"],
                             cwd=REPOSITORY, check=False)
    assert ignored.returncode == 0, "secrets.env would be committed"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_api_schemas(version: str) -> None:
    objects = [*documents(), ("secrets.env.example", generated_secret())]
    kinds = sorted(doc["kind"] for _, doc in objects)
    assert kinds == sorted(["Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment",
                            "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "CronJob", "Secret"])
    for name, document in objects:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {document['kind']} invalid for Kubernetes {version}: "
                        f"{exc.message} at {list(exc.path)}")


def test_the_schemas_catch_a_broken_manifest() -> None:
    """The control: a misspelt field and a wrong type are refused, offline."""
    deployment = one("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


def test_selectors_and_references_agree() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert one("Service")["spec"]["selector"] == selector
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    claim = one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it
    for kind in ("Deployment", "CronJob"):
        spec = pod_spec(kind)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        assert claims == {claim["metadata"]["name"]}, kind
        (container,) = spec["containers"]
        refs = {(r.get("configMapRef") or r.get("secretRef"))["name"]
                for r in container["envFrom"]}
        assert refs == {one("ConfigMap")["metadata"]["name"], SECRET}, kind
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {config()["RESOURCES_DIR"], config()["SCRYFALL_DATA_DIR"]}, kind
        assert container["image"] == services()[INFER]["image"], kind
        # the image's user, so that the shared volume is writable (fsGroup)
        assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["fsGroup"]
        assert spec["securityContext"]["runAsUser"] == 10001


def test_the_service_keeps_the_address_the_core_api_calls() -> None:
    service = one("Service")
    assert service["metadata"]["name"] == "descriptor-infer-service"
    (port,) = service["spec"]["ports"]
    (container,) = pod_spec("Deployment")["containers"]
    (container_port,) = container["ports"]
    assert port["port"] == 5001 and port["targetPort"] == container_port["name"]
    assert container_port["containerPort"] == Settings().port == int(config()["PORT"])


def test_probes_readiness_on_readyz_liveness_on_healthz() -> None:
    (container,) = pod_spec("Deployment")["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]


def test_resources_follow_the_measured_memory_and_cores() -> None:
    (container,) = pod_spec("Deployment")["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert quantity(requests["memory"]) >= REPLICA_PEAK_BYTES
    assert quantity(limits["memory"]) >= quantity(requests["memory"])
    # a pod sees the node's cores: the recognitions in flight are bounded by its own CPU
    assert 1 <= int(config()["MAX_CONCURRENT_INFER"]) <= quantity(limits["cpu"])
    assert quantity(requests["cpu"]) >= 1
    metric = one("HorizontalPodAutoscaler")["spec"]["metrics"][0]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    (job,) = pod_spec("CronJob")["containers"]
    assert quantity(job["resources"]["limits"]["memory"]) >= 1.7e9  # build peak, 100k


def test_pods_stop_after_gunicorns_graceful_timeout() -> None:
    spec = pod_spec("Deployment")
    (container,) = spec["containers"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    graceful = float(option(gunicorn_command(), "--graceful-timeout") or 30)
    assert spec["terminationGracePeriodSeconds"] > graceful + float(pause[1])
    strategy = one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_refresh_is_the_cronjob_under_the_same_lock() -> None:
    cronjob = one("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["schedule"] == Settings().refresh_cron
    assert cronjob["spec"]["timeZone"] in ("Etc/UTC", "UTC")  # REFRESH_CRON is UTC
    (container,) = pod_spec("CronJob")["containers"]
    assert container["command"] == ["flask", "--app", "app", "refresh"]
    from app.wiring.cli import refresh

    assert refresh.name == "refresh"
    # same configuration as the replicas, so the same Redis lock (model_update_lock)
    assert config()["REDIS_HOST"]
    assert pod_spec("Deployment")["containers"][0]["envFrom"] == container["envFrom"]
    # the replicas neither schedule it nor build a missing release: the CronJob does
    assert config()["REFRESH_ENABLED"] == "false"
    assert config()["BOOTSTRAP_MISSING_BUNDLE"] == "false"
    assert config()["WATCH_POLLING"] == "true"  # a rename made on another node


def test_configuration_is_valid_and_names_only_known_variables() -> None:
    secret = generated_secret()["stringData"]
    unknown = sorted(set(config()) - set(ENV_VARIABLES))
    assert not unknown, f"configmap.yaml sets variables the service does not read: {unknown}"
    assert set(secret) <= set(ENV_VARIABLES)
    assert not set(secret) & set(config()), "a secret also in the ConfigMap"
    for name in ("INFER_API_TOKENS", "POSTGRES_PASSWORD"):
        assert name in secret
    settings = Settings.from_env({**config(), **secret})
    assert settings.is_production and settings.infer_api_tokens
    assert settings.uses_postgres and settings.uses_redis
    assert settings.log_file_path == ""  # stdout: the cluster's log collector
    # the image's own environment does not contradict it
    assert dockerfile_env()["RESOURCES_DIR"] == config()["RESOURCES_DIR"]
    assert dockerfile_env()["SCRYFALL_DATA_DIR"] == config()["SCRYFALL_DATA_DIR"]


def test_the_readme_says_how_to_run_it() -> None:
    readme = (REPOSITORY / "docs" / "deployment.md").read_text()
    section = readme[readme.index("## Kubernetes"):]
    end = section.find("\n## ", 5)  # the last section of docs/deployment.md
    section = section[:end] if end > 0 else section
    for command in ("kubectl apply -k deploy/kubernetes/",
                    "create job", "--from=cronjob/descriptor-refresh",
                    "ReadWriteMany"):
        assert command in section, command
    assert shlex.split("kubectl apply -k deploy/kubernetes/")
