"""find_sweep: a sweep by its directory's path, its id, a unique prefix, or its spec's name."""

from __future__ import annotations

import pytest

from orchestrator.cli import BadInput, find_sweep


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "runs"
    for sweep_id, name in (
        ("alpha-1234abcd", "alpha"),
        ("alpha-quick-99ee0011", "alpha"),
        ("beta-00ff00ff", "beta"),
        ("gamma-5555aaaa", "gamma"),
        ("gammaray-77770000", "gammaray"),
        ("renamed-dir", "delta"),
    ):
        (root / sweep_id).mkdir(parents=True)
        (root / sweep_id / "spec.yaml").write_text(f"name: {name}\nseeds: [0]\n")
    (root / "not-a-sweep").mkdir()  # no spec.yaml: never listed
    return root


def test_by_id_prefix_and_name(storage):
    assert find_sweep("beta-00ff00ff", str(storage)) == storage / "beta-00ff00ff"
    assert find_sweep("gammar", str(storage)) == storage / "gammaray-77770000"
    assert find_sweep("gamma", str(storage)) == storage / "gamma-5555aaaa"  # a prefix of two; the name of one
    assert find_sweep("delta", str(storage)) == storage / "renamed-dir"  # the name of no prefix
    assert find_sweep("beta", str(storage)) == storage / "beta-00ff00ff"  # a prefix, and the name
    assert find_sweep("alpha-q", str(storage)) == storage / "alpha-quick-99ee0011"


def test_by_path_needs_no_storage(storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./glth-runs does not exist here
    assert not (tmp_path / "glth-runs").exists()
    assert find_sweep("runs/beta-00ff00ff", None) == storage / "beta-00ff00ff"
    assert find_sweep(str(storage / "beta-00ff00ff"), None) == storage / "beta-00ff00ff"
    assert find_sweep("runs/beta-00ff00ff/", "nowhere") == storage / "beta-00ff00ff"
    (storage / "beta-00ff00ff" / "rounds" / "dictionary=canonical").mkdir(parents=True)
    assert find_sweep("runs/beta-00ff00ff/rounds", None) == storage / "beta-00ff00ff"  # as glth run prints it
    assert (
        find_sweep(str(storage / "beta-00ff00ff" / "rounds" / "dictionary=canonical"), None)
        == storage / "beta-00ff00ff"
    )
    monkeypatch.chdir(storage)
    assert find_sweep("gamma-5555aaaa", "/nonexistent") == storage / "gamma-5555aaaa"  # a relative path in cwd


def test_default_storage_from_the_environment(storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLTH_STORAGE", str(storage))
    assert find_sweep("gamma", None) == storage / "gamma-5555aaaa"
    monkeypatch.delenv("GLTH_STORAGE")
    with pytest.raises(BadInput, match="--storage glth-runs does not exist"):
        find_sweep("gamma", None)


@pytest.mark.parametrize(
    "key,message",
    [
        ("alpha", "sweep: 'alpha' is ambiguous under {root}; it matches alpha-1234abcd, alpha-quick-99ee0011"),
        ("gam", "sweep: 'gam' is ambiguous under {root}; it matches gamma-5555aaaa, gammaray-77770000"),
        (
            "epsilon",
            "sweep: 'epsilon' matches no sweep under {root}; sweeps: alpha-1234abcd, alpha-quick-99ee0011, "
            "beta-00ff00ff, gamma-5555aaaa, gammaray-77770000, renamed-dir",
        ),
        (
            "not-a-sweep",
            "sweep: 'not-a-sweep' matches no sweep under {root}; sweeps: alpha-1234abcd, "
            "alpha-quick-99ee0011, beta-00ff00ff, gamma-5555aaaa, gammaray-77770000, renamed-dir",
        ),
    ],
)
def test_failures_are_one_line_listing_the_sweeps(storage, key, message):
    with pytest.raises(BadInput) as e:
        find_sweep(key, str(storage))
    assert str(e.value) == message.format(root=storage)


def test_a_directory_path_that_is_not_a_sweep(storage):
    with pytest.raises(BadInput) as e:
        find_sweep(str(storage / "not-a-sweep"), str(storage))
    assert str(e.value) == f"sweep: {storage / 'not-a-sweep'} is a directory but not a sweep (it has no spec.yaml)"
