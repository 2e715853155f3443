"""No secrets in the repository: every tracked or untracked-but-not-ignored text file is scanned.

Detectors: AWS access key ids (and secret keys in assignments), private key blocks, GitHub tokens,
Slack tokens and webhooks, and generic `password: <literal>` / `token = "<literal>"` assignments
whose value is long, high-entropy and not a reference ($VAR, ${{ … }}, <placeholder>, a path, a
call). A line that must hold a known-fake value can carry the marker `secrets-scan: allow`.
Findings print `file:line: kind (redacted)`, never the secret itself.

The self-tests build every fake secret by concatenation, so this file holds no secret literal.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOW_MARKER = "secrets-scan: allow"
MAX_BYTES = 5 * 1024 * 1024
SKIP_DIRS = {".venv", ".git"}

PATTERNS: list[tuple[str, re.Pattern]] = [
    ("AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    (
        "AWS secret access key",
        re.compile(r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
    ),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Slack webhook", re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+")),
]

# key containing a secret-ish word, then `:` `=` `:=` `=>`, then an optionally quoted value.
GENERIC = re.compile(
    r"(?i)(?P<key>[\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]*)"
    r"[\"']?\s*(?::=|=>|:|=)\s*"
    r"(?P<q>[\"'`]?)(?P<val>[^\s\"'`,;]+)(?P=q)"
)
PLACEHOLDER = re.compile(r"(?i)replace|change|example|placeholder|dummy|fake|your|redacted|xxxx|\*\*\*")
DOTTED_IDENTIFIER = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*")
MIN_GENERIC_LEN = 16
MIN_ENTROPY = 3.0  # bits per character; random hex of length 16+ is ~3.3-4, base64 higher


def shannon_entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def looks_like_literal_secret(value: str) -> bool:
    v = value.strip()
    if len(v) < MIN_GENERIC_LEN:
        return False
    if v[0] in "$%<{~/.@&*!#" or "://" in v:  # references, templates, paths, URLs
        return False
    if any(ch in v for ch in "()[]{}<>$"):  # calls, indexing, templates
        return False
    if PLACEHOLDER.search(v):
        return False
    if DOTTED_IDENTIFIER.fullmatch(v) and not re.search(r"\d", v):
        return False  # a name (MLFLOW_TRACKING_PASSWORD, args.token_file), not a value
    if not (re.search(r"[A-Za-z]", v) and re.search(r"\d", v)):
        return False
    parts = re.split(r"[-_.]", v)
    if len(parts) >= 2 and all(p.isalpha() or p.isdigit() or len(p) <= 3 for p in parts):
        return False  # a slug of words (bert-base-uncased-v2, gpt2-medium), not a random value
    return shannon_entropy(v) >= MIN_ENTROPY


def redact(s: str) -> str:
    return s[:4] + "…" if len(s) > 4 else "…"


def scan_text(label: str, text: str) -> list[str]:
    findings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if ALLOW_MARKER in line:
            continue
        for kind, pattern in PATTERNS:
            for m in pattern.finditer(line):
                findings.append(f"{label}:{lineno}: {kind} ({redact(m.group(0))})")
        for m in GENERIC.finditer(line):
            if looks_like_literal_secret(m.group("val")):
                findings.append(f"{label}:{lineno}: literal value for {m.group('key')!r} ({redact(m.group('val'))})")
    return findings


def scan_file(path: Path, label: str) -> list[str]:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_BYTES:
        return []
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []  # binary
    return scan_text(label, data.decode("utf-8", errors="replace"))


def repo_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", errors="surrogateescape")
    return sorted({p for p in out.split("\0") if p and not (set(Path(p).parts) & SKIP_DIRS)})


# --- the scan ----------------------------------------------------------------------------------


def test_repository_has_no_secrets():
    if shutil.which("git") is None:
        pytest.skip("git not available")
    try:
        files = repo_files(REPO)
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout")
    assert files, "git listed no files"
    findings = [f for rel in files for f in scan_file(REPO / rel, rel)]
    assert not findings, "possible secrets (remove them; rotate anything real):\n" + "\n".join(findings)


# --- the scanner catches what it should, and only that ---------------------------------------


def test_scanner_catches_a_planted_aws_key(tmp_path):
    fake_key = "AKIA" + "Q3EXAMPLE7" + "ABCDEF"  # shape of an access key id, built at run time
    planted = tmp_path / "leak.env"
    planted.write_text("# settings\nREGION=us-west-2\naws_access_key_id = " + fake_key + "\n")
    findings = scan_file(planted, "leak.env")
    assert findings and findings[0].startswith("leak.env:3: AWS access key id")
    assert fake_key not in "\n".join(findings), "findings must not print the secret"


def _fake(kind: str) -> str:
    hexy = "9f3b" + "c2d1" + "7a6e" + "5b40" + "8d2c" + "1e9f" + "a7b3" + "c6d5"
    return {
        "aws_secret": "aws_secret_access_key = " + "wJalrXUtnF" + "EMI/K7MDENG/" + "bPxRfiCYzq" + "9vT2kLpQ",
        "private_key": "-----BEGIN " + "RSA PRIVATE" + " KEY-----",
        "openssh_key": "-----BEGIN " + "OPENSSH PRIVATE" + " KEY-----",
        "github": "token: " + "gh" + "p_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5",
        "slack": "SLACK=" + "xo" + "xb-" + "2718281828-3141592653-" + "Zq8Xw7Vu6Ts5",
        "yaml_password": "password: " + "Zx8" + "qW2" + "rT5" + "yU9" + "pL3" + "mN7",
        "py_token": 'api_token = "' + hexy + '"',
        "json_secret": '{"client_secret": "' + hexy + '"}',
        "env_password": "MLFLOW_TRACKING_PASSWORD=" + "k3J9" + "xQ2m" + "Lp8v" + "Tz4w",
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "aws_secret",
        "private_key",
        "openssh_key",
        "github",
        "slack",
        "yaml_password",
        "py_token",
        "json_secret",
        "env_password",
    ],
)
def test_scanner_detects(kind, tmp_path):
    f = tmp_path / "planted.txt"
    f.write_text("first line\n" + _fake(kind) + "\n")
    findings = scan_file(f, "planted.txt")
    assert findings and all(x.startswith("planted.txt:2: ") for x in findings), findings


@pytest.mark.parametrize(
    "line",
    [
        'MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"',
        "export RAY_AUTH_TOKEN_PATH=$HOME/.glth/ray_token",
        'RAY_AUTH_TOKEN="$(cat ~/.glth/ray_token)"',
        "password: ${{ secrets.MLFLOW_PASSWORD }}",
        'token = os.environ["GLTH_TOKEN"]',
        "token = secrets.token_urlsafe(32)",
        "password: <your-admin-password>",
        'api_key = "REPLACE_WITH_YOUR_KEY_1234567"',
        "token_path: ~/.glth/ray_token",
        "secret_key_file: /home/ubuntu/mlflow/flask_secret_key",
        "password = args.mlflow_password_file",
        "tokenizer: bert-base-uncased-v2",
        "token: short1",
        "MLFLOW_TRACKING_PASSWORD=%s",
        "access_key: aaaaaaaaaaaaaaaa1111111111",  # long but low entropy
    ],
)
def test_scanner_ignores_references_and_placeholders(line):
    assert scan_text("x", line) == []


def test_allow_marker_silences_a_line():
    line = "password: " + "Zx8qW2rT5yU9pL3mN7"
    assert scan_text("x", line)
    assert scan_text("x", line + "  # " + ALLOW_MARKER) == []


def test_binary_files_are_skipped(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"\0\1\2" + ("AKIA" + "Q3EXAMPLE7ABCDEF").encode())
    assert scan_file(f, "blob.bin") == []


# --- secret-bearing files never enter the repository --------------------------------------------

# Names of files that hold a credential whatever their content: the Ray token and MLflow env file
# cluster.yaml mounts from ~/.glth, SSH/TLS keys, .env and .netrc files.
SECRET_FILE = re.compile(
    r"(?:^|/)(?:ray_token|auth_token|mlflow\.env|\.env|\.netrc|id_(?:rsa|ed25519|ecdsa)|[^/]*\.pem|[^/]*\.key)$"
)


def test_no_secret_bearing_file_is_in_the_repository():
    if shutil.which("git") is None:
        pytest.skip("git not available")
    try:
        files = repo_files(REPO)
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout")
    assert [f for f in files if SECRET_FILE.search(f)] == []


@pytest.mark.parametrize(
    "name",
    [
        "ray_token",
        ".glth/ray_token",
        "auth_token",
        "mlflow.env",
        ".env",
        "deploy/id_rsa",
        "ray-autoscaler_us-west-2.pem",
    ],
)
def test_secret_file_names_are_git_ignored(name, tmp_path):
    """A token or key file dropped into the checkout by mistake is ignored, so `git add -A` skips it."""
    if shutil.which("git") is None:
        pytest.skip("git not available")
    r = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=REPO, capture_output=True)
    assert r.returncode == 0, f"{name} is not ignored by .gitignore"
