"""cluster.yaml: Ray accepts it, and it is safe to `ray up`.

Ray's own checks run offline: ``prepare_config`` (merge with the AWS defaults, the same first step
as ``ray up``'s ``_bootstrap_config``) then ``validate_config`` (ray-schema.json plus Ray's
cross-field checks), and autoscaler v2's ``AutoscalingConfig`` (what the head's autoscaler reads).
The AWS node provider's ``bootstrap_config`` is never called: it talks to AWS (IAM, EC2, subnets,
security groups).

The security assertions pin what the design promises: a head without GPUs, autoscaled GPU workers,
token auth on every node, no secret in the file, nothing but SSH reachable from the internet, the
dashboard and MLflow off 0.0.0.0, MLflow behind basic auth.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"

# Dashboard + Jobs API, Ray client, GCS, MLflow: never reachable from the internet.
SENSITIVE_PORTS = {8265: "dashboard/Jobs", 10001: "Ray client", 6379: "GCS", 5000: "MLflow"}
WORLD = {"0.0.0.0/0", "::/0"}
ALL_INTERFACES = {"0.0.0.0", "::", "[::]", "*", ""}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    """The config as `ray up` sees it after Ray's own preparation and validation."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _start_commands(config: dict) -> dict[str, list[str]]:
    return {
        "head_start_ray_commands": config["head_start_ray_commands"],
        "worker_start_ray_commands": config["worker_start_ray_commands"],
    }


def _all_commands(config: dict) -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    return [cmd for key in keys for cmd in config.get(key) or []]


def _mlflow_server_command(config: dict) -> str:
    found = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(found) == 1, "exactly one head start command must start the MLflow server"
    return found[0]


def _flag(cmd: str, name: str) -> str | None:
    """Value of `--name=V` / `--name V` (quotes stripped), or None."""
    m = re.search(rf"{re.escape(name)}(?:=|\s+)(\"[^\"]*\"|'[^']*'|\S+)", cmd)
    return m.group(1).strip("\"'") if m else None


# --- Ray's own validation ----------------------------------------------------------------------


def test_ray_validates_the_config(prepared):
    assert prepared["cluster_name"] == "glth"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"]
    assert prepared["auth"]["ssh_user"] == "ubuntu"
    assert prepared["idle_timeout_minutes"] > 0
    # `ray up` warns and the head launches no workers without this flag.
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in c for c in prepared["head_start_ray_commands"])


def test_autoscaler_v2_reads_the_node_types(raw):
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

    config = AutoscalingConfig(copy.deepcopy(raw), skip_content_hash=True)
    types = config.get_node_type_configs()
    head = config.get_head_node_type()
    assert types[head].resources.get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != head and t.resources.get("GPU", 0) >= 1]
    assert gpu_types and all(t.min_worker_nodes == 0 and t.max_worker_nodes >= 1 for t in gpu_types)
    assert config.get_max_num_worker_nodes() >= max(t.max_worker_nodes for t in gpu_types)
    assert config.get_idle_timeout_s() and config.get_idle_timeout_s() > 0


def test_every_shell_command_parses(prepared):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    for cmd in _all_commands(prepared):
        r = subprocess.run([bash, "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"bash syntax error in {cmd!r}: {r.stderr}"


# --- nodes -------------------------------------------------------------------------------------


def test_head_has_no_gpu_and_a_gpu_worker_type_autoscales(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU") == 0, "the head must advertise GPU: 0"
    assert head["node_config"]["InstanceType"].split(".")[0] in {"m5", "m6i", "m7i", "c5", "c6i", "r5"}
    workers = {n: t for n, t in types.items() if n != prepared["head_node_type"]}
    gpu = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, t in gpu.items():
        assert t["min_workers"] == 0, f"{name}: GPU workers should scale from zero"
        assert t["max_workers"] >= 1
        assert t["node_config"]["InstanceType"].startswith(("g4dn", "g5", "g6", "p3", "p4", "p5"))
    assert prepared["max_workers"] >= max(t["max_workers"] for t in gpu.values())


# --- Ray token authentication ------------------------------------------------------------------

TOKEN_SOURCE = re.compile(
    r"RAY_AUTH_TOKEN_PATH=(?P<path>\S+?)(?=[\s;&]|$)"  # Ray reads the token from this file
    r"|RAY_AUTH_TOKEN=\"?\$\(cat (?P<cat>[^)\s]+)\)"  # or the value, read from a file
)


def _token_paths(cmd: str) -> list[str]:
    return [m.group("path") or m.group("cat") for m in TOKEN_SOURCE.finditer(cmd)]


def test_token_auth_in_every_start_command(prepared):
    for key, cmds in _start_commands(prepared).items():
        starts = [c for c in cmds if re.search(r"\bray start\b", c)]
        assert starts, f"{key}: no `ray start`"
        for cmd in starts:
            before = cmd[: cmd.index("ray start")]
            assert re.search(r"\bRAY_AUTH_MODE=token\b", before), f"{key}: RAY_AUTH_MODE=token not exported: {cmd}"
            assert _token_paths(before), (
                f"{key}: no token source (RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN=$(cat FILE)): {cmd}"
            )
    assert not any("RAY_AUTH_MODE=disabled" in c for c in _all_commands(prepared))


def test_token_file_is_mounted_from_outside_the_repo(prepared):
    mounts = prepared["file_mounts"]
    for cmd in prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]:
        for path in _token_paths(cmd):
            remote = path.replace("$HOME", "~").replace("${HOME}", "~")
            assert remote in mounts, f"token file {path} is not in file_mounts"
            local = Path(os.path.expanduser(mounts[remote])).resolve()
            assert REPO not in local.parents, f"the token would be synced from inside the repo: {local}"


def test_no_literal_token_or_password_in_the_yaml():
    text = CLUSTER_YAML.read_text()
    # Values may only be references ($VAR, "$VAR", $(cat FILE)), never literals.
    for var in (
        "RAY_AUTH_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
    ):
        for m in re.finditer(rf"\b{var}=(\S*)", text):
            value = m.group(1)
            if var == "MLFLOW_TRACKING_PASSWORD" and value.startswith("%s"):
                continue  # the printf recipe in the header comment writes a generated value
            assert value.lstrip("\"'").startswith("$"), f"literal value for {var}: {m.group(0)!r}"
    # Passwords go through env files, never as command-line flags (visible in `ps`).
    assert not re.search(r"--password\b", text)


def test_ray_reads_the_token_from_the_exported_variable(prepared, tmp_path):
    """The exported name really is what Ray 2.60's token loader reads (checked in a fresh process)."""
    cmd = next(c for c in prepared["worker_start_ray_commands"] if "ray start" in c)
    m = re.search(r"\b(RAY_AUTH_TOKEN_PATH)=(\S+?)(?=[\s;&]|$)", cmd)
    if m is None:
        pytest.skip("token passed as RAY_AUTH_TOKEN=$(cat FILE); nothing more to check")
    token_file = tmp_path / m.group(2).replace("$HOME/", "").replace("~/", "")
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text("glth-test-token-0123456789")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE="token", **{m.group(1): str(token_file)})
    code = (
        "from ray._raylet import AuthenticationTokenLoader as L\n"
        "print(L.instance().get_raw_token(ignore_auth_mode=True))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("glth-test-token-0123456789")


# --- network exposure --------------------------------------------------------------------------


def _covers(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol", "")).lower() in {"-1", "all"}:
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    if lo == -1 or hi == -1:
        return True
    return lo <= port <= hi


def _cidrs(rule: dict) -> list[str]:
    return [r.get("CidrIp", "") for r in rule.get("IpRanges", [])] + [
        r.get("CidrIpv6", "") for r in rule.get("Ipv6Ranges", [])
    ]


def _world_exposed(rules: list[dict]) -> list[str]:
    bad = []
    for rule in rules:
        for cidr in _cidrs(rule):
            if cidr in WORLD or ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
                bad += [
                    f"{name} ({port}) open to {cidr}" for port, name in SENSITIVE_PORTS.items() if _covers(rule, port)
                ]
    return bad


def test_security_group_opens_only_ssh_from_an_admin_cidr(prepared):
    rules = prepared["provider"]["security_group"]["IpPermissions"]
    assert rules, "no inbound rules: Ray would add only its defaults"
    assert _world_exposed(rules) == []
    for rule in rules:
        if rule.get("UserIdGroupPairs"):
            continue  # intra-cluster (the group itself); Ray adds this one on its own
        cidrs = _cidrs(rule)
        assert cidrs, f"rule without a source: {rule}"
        assert (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) == ("tcp", 22, 22), (
            f"only SSH may be opened to an address range: {rule}"
        )
        for cidr in cidrs:
            assert cidr not in WORLD, "SSH must come from the admin CIDR, not the whole internet"
            ipaddress.ip_network(cidr, strict=False)  # a well-formed CIDR
    # No node type brings its own group that could open more.
    for t in prepared["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]


def test_exposure_check_catches_bad_rules():
    assert _world_exposed(
        [{"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 9000, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ) == ["dashboard/Jobs (8265) open to 0.0.0.0/0"]
    assert len(_world_exposed([{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])) == 4
    assert (
        _world_exposed([{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        == []
    )


def test_rules_ray_adds_open_no_sensitive_port(prepared):
    """Ray merges its own defaults with ours when it creates the group (pure function, no AWS call)."""
    pytest.importorskip("boto3", reason="Ray's AWS module needs boto3 (the `cluster` extra)")
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    extended = prepared["provider"]["security_group"]["IpPermissions"]
    merged = _create_default_inbound_rules({"sg-0123456789abcdef0"}, extended)
    assert _world_exposed(merged) == []


def test_dashboard_is_not_bound_to_all_interfaces(prepared):
    head_start = next(c for c in prepared["head_start_ray_commands"] if "ray start --head" in c)
    host = _flag(head_start, "--dashboard-host")
    assert host is not None, "set --dashboard-host explicitly"
    assert host not in ALL_INTERFACES


def test_mlflow_server_is_private_and_behind_basic_auth(prepared):
    cmd = _mlflow_server_command(prepared)
    host = _flag(cmd, "--host")
    assert host is not None and host not in ALL_INTERFACES, f"MLflow bound to {host!r}"
    assert _flag(cmd, "--app-name") == "basic-auth"
    assert "nohup" in cmd
    assert "--disable-security-middleware" not in cmd
    allowed = _flag(cmd, "--allowed-hosts")
    assert allowed is None or "*" not in allowed.split(",")
    backend = _flag(cmd, "--backend-store-uri")
    assert backend and backend.startswith(("sqlite:////", "postgresql://", "postgresql+", "mysql"))
    assert _flag(cmd, "--artifacts-destination")
    # The admin password comes from the mounted secrets file, through the environment.
    assert re.search(r"MLFLOW_AUTH_ADMIN_PASSWORD=\"?\$", cmd)
    assert "~/.glth/mlflow.env" in prepared["file_mounts"]
    assert any("mlflow[auth]" in c for c in prepared["head_setup_commands"]), "basic-auth needs mlflow[auth]"


def test_workers_log_to_the_head_mlflow_with_credentials(prepared):
    cmd = next(c for c in prepared["worker_start_ray_commands"] if "ray start" in c)
    before = cmd[: cmd.index("ray start")]
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in before
    assert re.search(r"\. ~/\.glth/mlflow\.env|source ~/\.glth/mlflow\.env", before), (
        "workers need MLFLOW_TRACKING_USERNAME/PASSWORD from the mounted secrets file"
    )
    assert "set -a" in before  # so the sourced variables are exported to Ray's processes


# --- code on the nodes -------------------------------------------------------------------------


def test_setup_installs_glth_with_the_cluster_extra(prepared):
    installs = [c for c in prepared["setup_commands"] if "pip install" in c and "glth[cluster]" in c]
    assert installs, "setup_commands must pip install glth[cluster]"
    assert prepared["file_mounts"].get("~/glth") == "."
    excluded = set(prepared["rsync_exclude"])
    assert {".venv", "glth-runs", "mlflow.db"} <= excluded
