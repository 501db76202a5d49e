"""The KubeRay manifests in examples/kuberay, checked without a Kubernetes cluster or Ray.

The RayService's ``serveConfigV2`` is validated with Ray Serve's own schema and kept equal to
examples/serve_config.yaml (the config ``rlserve serve --config`` and ``serve run`` use) but for
the fields listed here; its app args go through the app's own ``AppArgs``. The RayJob's
entrypoint is parsed by rlserve's own CLI. Both keep the project's posture: Ray token auth on
every Ray container, the token from a Secret, and the dashboard reachable only by KubeRay's
operator.
"""

from __future__ import annotations

import copy
import importlib.metadata
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from rlserve.cli import app
from rlserve.container import DEFAULT_ARTIFACT_DIR
from rlserve.jobs.config_file import _check_config_file
from rlserve.jobs.service import ServiceError
from serving.app import AppArgs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
TOKEN_PLACEHOLDER = "${RLSERVE_TOKEN}"
RAY_TOKEN_SECRET = "rlserve-ray-token"
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}

# What the RayService's Serve config changes from examples/serve_config.yaml, and nothing else.
CHANGED_ARGS = {
    "artifact": DEFAULT_ARTIFACT_DIR,  # where the image built for the service holds it
    "token": TOKEN_PLACEHOLDER,  # filled in from a Secret when applied (envsubst)
}
CHANGED_HTTP_OPTIONS = {"host": "0.0.0.0"}  # the pods' address: only with a token (checked)


def _documents(name: str) -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind (one of each)."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "kuberay" / name).read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{name}: one document per kind"
    return by_kind


def _service() -> dict[str, Any]:
    return _documents("rayservice.yaml")["RayService"]


def _job() -> dict[str, Any]:
    return _documents("rayjob.yaml")["RayJob"]


def _cluster_spec(name: str) -> dict[str, Any]:
    if name == "rayservice.yaml":
        spec: dict[str, Any] = _service()["spec"]["rayClusterConfig"]
    else:
        spec = _job()["spec"]["rayClusterSpec"]
    return spec


def _pod_templates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [group["template"] for group in groups]


def _ray_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray container (KubeRay's: the first) of the head and of every worker group."""
    return [template["spec"]["containers"][0] for template in _pod_templates(spec)]


def _serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_service()["spec"]["serveConfigV2"])
    return config


def _train_params(entrypoint: str) -> dict[str, Any]:
    """Parse an ``rlserve train ...`` command line with the real CLI, without running it."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["rlserve", "train"], argv
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    params: dict[str, Any] = group.commands["train"].make_context("train", argv[2:]).params
    return params


MANIFESTS = ("rayservice.yaml", "rayjob.yaml")


def test_the_kinds_and_api_versions() -> None:
    assert _service()["apiVersion"] == "ray.io/v1"
    assert _job()["apiVersion"] == "ray.io/v1"
    assert _documents("rayservice.yaml").keys() == {"NetworkPolicy", "RayService"}
    assert _documents("rayjob.yaml").keys() == {
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "RayJob",
    }


@pytest.mark.parametrize("name", MANIFESTS)
def test_the_ray_version_is_the_installed_one(name: str) -> None:
    """rayVersion (KubeRay picks probes and auth by it) is the Ray the image installs."""
    installed = importlib.metadata.version("ray").split(".")[:2]
    assert _cluster_spec(name)["rayVersion"].split(".")[:2] == installed


def test_serve_config_v2_passes_ray_serves_schema() -> None:
    schema = ServeDeploySchema.model_validate(_serve_config())
    assert [a.import_path for a in schema.applications] == ["serving.app:build_app"]
    broken = _serve_config()
    broken["applications"][0]["import_pth"] = broken["applications"][0].pop("import_path")
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(broken)


def test_serve_config_v2_is_the_clis_serve_config_but_for_the_listed_fields() -> None:
    ours = _serve_config()
    cli = yaml.safe_load((EXAMPLES / "serve_config.yaml").read_text())
    expected = copy.deepcopy(cli)
    for application in expected["applications"]:
        application["args"].update(CHANGED_ARGS)
    expected["http_options"].update(CHANGED_HTTP_OPTIONS)
    assert ours == expected


def test_each_applications_args_validate_against_the_apps_own_model() -> None:
    for application in _serve_config()["applications"]:
        args = AppArgs.model_validate(application["args"])
        assert args.policy_paths() == {"cartpole": DEFAULT_ARTIFACT_DIR}
        renamed = dict(application["args"])
        renamed["max_batch"] = renamed.pop("max_batch_size")
        with pytest.raises(ValidationError, match="max_batch"):
            AppArgs.model_validate(renamed)


def test_the_api_binds_beyond_loopback_only_with_a_token(tmp_path: Path) -> None:
    """rlserve's own rule for a Serve config file (``rlserve serve --config``) holds."""
    text = _service()["spec"]["serveConfigV2"]
    assert text.count(TOKEN_PLACEHOLDER) == 1  # a placeholder, never a real token
    rendered = tmp_path / "rendered.yaml"
    digits = "12345678" * 8  # a hex token can be all digits: quoted, it stays a string
    rendered.write_text(text.replace(TOKEN_PLACEHOLDER, digits))
    _check_config_file(str(rendered))
    args = yaml.safe_load(rendered.read_text())["applications"][0]["args"]
    assert AppArgs.model_validate(args).token == digits
    untokened = _serve_config()
    del untokened["applications"][0]["args"]["token"]
    (tmp_path / "open.yaml").write_text(yaml.safe_dump(untokened))
    with pytest.raises(ServiceError, match=r"needs args\.token"):
        _check_config_file(str(tmp_path / "open.yaml"))


def test_every_pod_of_the_service_runs_the_image_with_the_artifact() -> None:
    """No shared filesystem: the artifact comes with the image, the same on every pod."""
    images = {c["image"] for c in _ray_containers(_cluster_spec("rayservice.yaml"))}
    assert len(images) == 1
    for template in _pod_templates(_cluster_spec("rayservice.yaml")):
        assert "volumes" not in template["spec"]  # nothing mounted from elsewhere
    # The workers' own readiness probe (the image has no wget) is valid Python.
    for group in _cluster_spec("rayservice.yaml")["workerGroupSpecs"]:
        command = group["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        compile(command[2], "readinessProbe", "exec")


def test_the_rayjob_entrypoint_parses_with_the_real_cli() -> None:
    job = _job()["spec"]
    params = _train_params(job["entrypoint"])
    assert params["config"] == "cartpole_ppo"
    assert (ROOT / "training" / "tuned_examples" / "cartpole_ppo.yaml").is_file()
    assert params["address"] == "auto"  # the job's own cluster, never a private Ray
    assert params["num_env_runners"] == 2
    assert params["checkpoint_every"] > 0
    # A misspelt option fails the parse: the check has teeth.
    with pytest.raises(Exception, match="No such option: --adress"):
        _train_params(job["entrypoint"].replace("--address", "--adress"))


def test_the_rayjobs_checkpoints_go_to_the_claim_on_the_head() -> None:
    docs = _documents("rayjob.yaml")
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    spec = docs["RayJob"]["spec"]
    checkpoint_dir = Path(_train_params(spec["entrypoint"])["checkpoint_dir"])
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head["volumes"]}
    mounts = [
        m
        for m in head["containers"][0]["volumeMounts"]
        if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == claim
    ]
    assert len(mounts) == 1
    assert checkpoint_dir.is_relative_to(mounts[0]["mountPath"])
    assert head["securityContext"]["fsGroup"] == 10001  # the image's user writes there
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:  # only the driver writes
        assert "volumes" not in group["template"]["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "SidecarMode"  # submits over the head pod's loopback


@pytest.mark.parametrize("name", MANIFESTS)
def test_ray_token_auth_is_on_for_head_and_workers(name: str) -> None:
    spec = _cluster_spec(name)
    assert spec["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET}
    containers = _ray_containers(spec)
    assert len(containers) >= 2  # a head and a worker group
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token  # never a literal token
        assert token["valueFrom"]["secretKeyRef"] == {"name": RAY_TOKEN_SECRET, "key": "auth_token"}


def _ports(rule: dict[str, Any]) -> set[int] | None:
    """The ports an ingress rule admits (``None``: all of them)."""
    return {p["port"] for p in rule["ports"]} if "ports" in rule else None


@pytest.mark.parametrize("name", MANIFESTS)
def test_the_dashboard_is_not_exposed(name: str) -> None:
    """KubeRay needs the dashboard, so it runs: on the head only, reached by the operator only."""
    spec = _cluster_spec(name)
    head, *workers = [t["spec"]["containers"] for t in _pod_templates(spec)]
    assert {"name": "dashboard", "containerPort": DASHBOARD_PORT} in head[0]["ports"]
    for container in [*head[1:], *(c for group in workers for c in group)]:
        assert DASHBOARD_PORT not in {p["containerPort"] for p in container.get("ports", [])}
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert group.get("serviceType", "ClusterIP") == "ClusterIP"
        assert not group.get("enableIngress", False)
        assert "dashboard-host" not in group["rayStartParams"]  # KubeRay's default, the pod's
    # The NetworkPolicy covers every Ray pod and admits 8265 from the operator and the Ray
    # pods themselves only.
    policy = _documents(name)["NetworkPolicy"]["spec"]
    selector = policy["podSelector"]["matchLabels"]
    for template in _pod_templates(spec):
        assert selector.items() <= template["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    sources = []
    for rule in policy["ingress"]:
        ports = _ports(rule)
        if ports is None or DASHBOARD_PORT in ports:
            assert "from" in rule, rule  # no rule opens the dashboard to every source
            sources += rule["from"]
    assert sources
    for source in sources:
        labels = source["podSelector"]["matchLabels"]
        assert labels in (OPERATOR, selector), source
        if labels == selector:  # the Ray pods of this namespace, not a look-alike elsewhere
            assert "namespaceSelector" not in source, source


def test_the_service_api_is_reachable_only_as_the_token_allows() -> None:
    policy = _documents("rayservice.yaml")["NetworkPolicy"]["spec"]
    assert "serveService" not in _service()["spec"]  # KubeRay's default: a ClusterIP Service
    open_rules = [r for r in policy["ingress"] if "from" not in r]
    assert [_ports(r) for r in open_rules] == [{SERVE_PORT}]
    assert _serve_config()["http_options"]["port"] == SERVE_PORT
    assert _serve_config()["applications"][0]["args"]["token"]
