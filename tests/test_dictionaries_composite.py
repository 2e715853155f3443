"""The composite dictionary: parts side by side over disjoint scopes. Checked against independent
computations: a dense DᵀD = I with zero off-diagonal blocks between parts, each part equal to the
same spec built alone, one sparsify step against a NumPy ranking of every group's and element's
energy, per-part τ counts, seeds, labels and one-line spec errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from glth_core import models
from glth_core.dictionaries import DictionarySpecError, build, label_of, seed_dependent, seeded, validate
from glth_core.imp import Trajectory
from glth_core.sparsify import count_to_remove, sparsify, sparsify_dictionary
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig
from orchestrator.sinks.parquet import _SAFE_NAME

torch.set_num_threads(1)


def _rel(x, y) -> float:
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    return float((x - y).norm() / y.norm())


def tiny() -> nn.Sequential:
    """401 parameters: small enough for a dense D."""
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    m.input_shape = (2, 6, 6)
    return m


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {
        "tiny": tiny(),
        "mlp": models.build("mlp_300_100", (3, 32, 32), 10),
        "cnn": models.build("cnn_paper", (3, 32, 32), 10),
        "conv2": models.build("conv2", (3, 8, 8), 10),
    }


TINY = {
    "kind": "composite",
    "parts": [
        {"kind": "bottleneck", "layer": "0", "basis": "dct"},
        {"kind": "random", "method": "haar", "scope": ["3.weight"]},
        {"kind": "canonical", "scope": ["0.bias"]},
    ],
}


def test_dense_d_is_orthonormal_and_block_diagonal_over_the_parts(nets):
    m = nets["tiny"]
    d = build(TINY, m)
    assert d.scope_names == ("0.weight", "3.weight", "0.bias") and d.size == 72 + 320 + 4  # 3.bias trains densely
    D = d.synthesize(torch.eye(d.size, dtype=torch.float64)).T
    assert (D.T @ D - torch.eye(d.size, dtype=torch.float64)).abs().max() < 1e-5
    cuts = np.cumsum([0, *d.sizes])
    for i in range(3):
        for j in range(3):
            block = D[cuts[i] : cuts[i + 1], cuts[j] : cuts[j + 1]]
            if i != j:
                assert block.abs().max() == 0
            else:  # each diagonal block is the part built alone
                alone = build(TINY["parts"][i], m)
                assert _rel(block, alone.synthesize(torch.eye(alone.size, dtype=torch.float64)).T) < 1e-6


from test_dictionaries import _tensors  # noqa: E402  (every tensor a dictionary holds)


def test_to_moves_every_tensor_of_every_part(nets):
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "bottleneck", "layer": "0", "basis": "random", "tau": 0.5},
            {"kind": "channels", "layer": "3", "per": "out"},
            {"kind": "random"},
        ],
    }
    d = build(spec, nets["tiny"]).to("meta")
    found = list(_tensors(d, set()))
    assert len(found) > 5 and {t.device.type for t in found} == {"meta"}
    a = torch.empty(d.size, device="meta")
    assert d.synthesize(a).device.type == d.analyze(a).device.type == "meta"


CASES = {
    "mlp-dct-rest": (
        "mlp",
        {"kind": "composite", "parts": [{"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"kind": "canonical"}]},
    ),
    "mlp-three": (
        "mlp",
        {
            "kind": "composite",
            "parts": [
                {"kind": "bottleneck", "layer": "3", "basis": "random", "tau": 0.5},
                {"kind": "canonical", "scope": ["1.weight", "5.weight"]},
                {"kind": "blockdiag", "per": "unit", "block": "dct", "scope": ["*.bias"]},
            ],
        },
    ),
    "cnn-conv": (
        "cnn",
        {
            "kind": "composite",
            "seed": 3,
            "parts": [
                {"kind": "bottleneck", "layer": "0", "basis": "dct"},
                {"kind": "channels", "layer": "2", "per": "out"},
                {"kind": "random", "scope": ["4.*", "7.*"]},
            ],
        },
    ),
    "conv2-all": (
        "conv2",
        {
            "kind": "composite",
            "parts": [
                {"kind": "channels", "layer": "0", "per": "in"},
                {"kind": "bottleneck", "layer": "2", "basis": "random", "seed": 9},
                {"kind": "random", "method": "fast"},
            ],
        },
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_composites_are_orthonormal_linear_and_their_gradient_is_the_transpose(case, nets):
    net, spec = CASES[case]
    m = nets[net]
    d = build(spec, m)
    g = torch.Generator().manual_seed(7)
    a, b, u = (torch.randn(d.size, generator=g) for _ in range(3))
    w = d.synthesize(a)
    assert _rel(d.analyze(w), a) < 1e-5 and abs(float(w.double().norm() / a.double().norm()) - 1) < 1e-5
    assert _rel(d.synthesize(2.5 * a - b), 2.5 * w - d.synthesize(b)) < 1e-5
    params = dict(m.named_parameters())
    flat = d.flatten(params).detach()
    assert _rel(d.synthesize(d.analyze(flat)), flat) < 1e-5
    assert all(torch.equal(t, params[n].detach()) for n, t in d.unflatten(flat).items())
    leaf = a.clone().requires_grad_(True)
    (d.synthesize(leaf) * u).sum().backward()
    assert _rel(leaf.grad, d.analyze(u)) < 1e-5
    assert _rel(d.synthesize(torch.stack([a, b]))[1], d.synthesize(b)) < 1e-6  # leading batch dims
    names = [n for n, _ in m.named_parameters()]
    assert len(set(d.scope_names)) == len(d.scope_names) and set(d.scope_names) <= set(names)


def test_a_part_without_scope_takes_every_parameter_the_others_leave(nets):
    d = build(CASES["mlp-dct-rest"][1], nets["mlp"])
    assert d.parts[0].scope_names == ("1.weight",)
    assert d.parts[1].scope_names == ("1.bias", "3.weight", "3.bias", "5.weight", "5.bias")
    assert d.size == sum(p.numel() for p in nets["mlp"].parameters())


def test_groups_are_the_parts_groups_offset_and_singletons(nets):
    d = build(CASES["mlp-dct-rest"][1], nets["mlp"])
    n0 = 300 * 3072
    assert torch.equal(d.groups[:n0], d.parts[0].groups)
    assert torch.equal(d.groups[n0:], 3072 + torch.arange(d.size - n0))
    assert d.num_groups == 3072 + d.size - n0
    none = build(
        {"kind": "composite", "parts": [{"kind": "canonical", "scope": ["1.*"]}, {"kind": "random", "scope": ["3.*"]}]},
        nets["mlp"],
    )
    assert none.groups is None and none.tau_segments is None


def test_one_step_is_one_global_ordering_by_energy(nets):
    """Groups (columns of U) and single canonical elements ranked together by Σ a² (NumPy)."""
    m = nets["cnn"]
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "bottleneck", "layer": "2", "basis": "random", "seed": 1},
            {"kind": "canonical", "scope": ["0.weight"]},
        ],
    }
    d = build(spec, m)
    a = d.analyze(d.flatten(dict(m.named_parameters())).detach())
    mask = sparsify_dictionary(a, torch.ones(d.size, dtype=torch.bool), 0.4, d)
    A = a[:1152].double().numpy().reshape(8, 144)
    energy = np.concatenate([(A**2).sum(0), a[1152:].double().numpy() ** 2])  # 144 columns, then 432 elements
    k = round(0.4 * len(energy))
    drop = np.argsort(energy, kind="stable")[:k]
    expect = np.ones(d.size, dtype=bool)
    cols, elems = drop[drop < 144], drop[drop >= 144] - 144
    expect[:1152].reshape(8, 144)[:, cols] = False
    expect[1152 + elems] = False
    assert np.array_equal(mask.numpy(), expect)
    assert 0 < len(cols) < 144 and 0 < len(elems) < 432  # both kinds of unit were ranked against each other


def test_per_part_tau_prunes_each_part_by_its_own_rate(nets):
    m = nets["mlp"]
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "bottleneck", "layer": "3", "basis": "identity", "tau": 0.5},  # 300 groups
            {"kind": "canonical", "scope": ["5.*"]},  # 1010 elements: pooled with part 3 at the global τ
            {"kind": "random", "scope": ["3.bias"], "tau": 0.25, "seed": 2},  # 100 elements
            {"kind": "channels", "layer": "1", "per": "out"},
        ],
    }  # 300 groups: pooled
    d = build(spec, m)
    assert [(s.start, s.stop, s.tau) for s in d.tau_segments] == [
        (0, 30000, 0.5),
        (30000, 31010, None),
        (31010, 31110, 0.25),
        (31110, 31110 + 300 * 3073, None),
    ]
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(d.size, dtype=torch.bool)
    left = {"bn": 300, "rot": 100, "pool": 1010 + 300}
    for _ in range(3):
        a = torch.randn(d.size, generator=g)
        new = sparsify_dictionary(a, mask, 0.2, d)
        assert not (new & ~mask).any()
        bn = new[:30000].view(100, 300).any(0)
        assert int(bn.sum()) == left["bn"] - count_to_remove(left["bn"], 0.5)
        assert int(new[31010:31110].sum()) == left["rot"] - count_to_remove(left["rot"], 0.25)
        units = int(new[30000:31010].sum()) + int(new[31110:].view(300, 3073).any(1).sum())
        assert units == left["pool"] - count_to_remove(left["pool"], 0.2)
        # the τ part drops its own weakest columns among themselves
        energy = (a[:30000].double().view(100, 300) ** 2 * mask[:30000].view(100, 300)).sum(0).numpy()
        alive = mask[:30000].view(100, 300).any(0).numpy()
        order = [c for c in np.argsort(energy, kind="stable") if alive[c]]
        assert set(np.nonzero(alive & ~bn.numpy())[0]) == set(order[: count_to_remove(left["bn"], 0.5)])
        left = {"bn": int(bn.sum()), "rot": int(new[31010:31110].sum()), "pool": units}
        mask = new
    assert left == {"bn": 37, "rot": 42, "pool": 670}
    # without τ segments it is sparsify itself
    plain = build(CASES["mlp-dct-rest"][1], m)
    a = torch.randn(plain.size, generator=g)
    ones = torch.ones(plain.size, dtype=torch.bool)
    assert torch.equal(sparsify_dictionary(a, ones, 0.3, plain), sparsify(a, ones, 0.3, plain.groups))


def test_seeds_labels_and_describe(nets):
    m = nets["mlp"]
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "random", "scope": ["1.*"]},
            {"kind": "random", "scope": ["3.*"], "seed": 4},
            {"kind": "canonical"},
        ],
    }
    assert seed_dependent(spec) and seeded(spec, 11)["seed"] == 11
    assert not seed_dependent({"kind": "composite", "parts": [{"kind": "random", "seed": 1}]})
    d = build(seeded(spec, 11), m)
    for part, seed in zip(d.parts[:2], (11, 4)):
        alone = build({"kind": "random", "scope": list(part.scope_names), "seed": seed}, m)
        x = torch.randn(part.size)
        assert torch.equal(part.synthesize(x), alone.synthesize(x))
    label = label_of(
        {
            "kind": "composite",
            "parts": [
                {"kind": "bottleneck", "layer": "1", "basis": "dct", "tau": 0.5},
                {"kind": "canonical", "label": "rest"},
            ],
        }
    )
    assert label == "composite-bottleneck-dct-tau0.5+rest" and _SAFE_NAME.fullmatch(label)
    assert label_of({**spec, "label": "mine"}) == "mine"
    assert d.label == "composite-random-fast+random-fast+canonical" and _SAFE_NAME.fullmatch(d.label)
    assert d.describe() == {
        "dictionary": d.label,
        "dictionary_kind": "composite",
        "basis": "random-fast+random-fast+canonical",
    }


def _p(*parts, **extra):
    return {"kind": "composite", "parts": list(parts), **extra}


BAD = {
    "no parts": ({"kind": "composite"}, "dictionary.parts: missing for kind composite"),
    "parts not a list": (_p() | {"parts": {"kind": "canonical"}}, "dictionary.parts: must be a non-empty list"),
    "empty parts": (_p(), "dictionary.parts: must be a non-empty list"),
    "part not a mapping": (_p("canonical"), "dictionary.parts[0]: must be a mapping"),
    "nested composite": (
        _p({"kind": "canonical"}, _p({"kind": "canonical"})),
        "dictionary.parts[1].kind: a composite's parts cannot be composites",
    ),
    "part unknown kind": (_p({"kind": "wavelet"}), "dictionary.parts[0].kind: 'wavelet' is not one of"),
    "part bad basis": (
        _p({"kind": "bottleneck", "layer": "1", "basis": "foo"}),
        "dictionary.parts[0].basis: 'foo' is not one of identity, dct, random, pca",
    ),
    "part bad layer": (
        _p({"kind": "canonical", "scope": ["5.*"]}, {"kind": "bottleneck", "layer": "2", "basis": "dct"}),
        "dictionary.parts[1].layer: '2' is a ReLU",
    ),
    "part bad tau": (
        _p({"kind": "canonical", "tau": 1.5}),
        "dictionary.parts[0].tau: must be a number in (0, 1), got 1.5",
    ),
    "part tau not a number": (_p({"kind": "canonical", "tau": "half"}), "dictionary.parts[0].tau"),
    "part seed on canonical": (
        _p({"kind": "canonical", "seed": 1}),
        "dictionary.parts[0].seed: not a key of kind canonical",
    ),
    "part scope matches nothing": (
        _p({"kind": "canonical", "scope": ["9.*"]}),
        "dictionary.parts[0].scope: '9.*' matches no parameter",
    ),
    "overlap": (
        _p({"kind": "canonical", "scope": ["1.weight", "3.*"]}, {"kind": "bottleneck", "layer": "1", "basis": "dct"}),
        "dictionary.parts: parts 0 and 1 both claim parameter '1.weight'; part scopes must be disjoint",
    ),
    "overlap by glob": (
        _p({"kind": "random", "scope": ["*.bias"]}, {"kind": "channels", "layer": "5", "per": "out"}),
        "dictionary.parts: parts 0 and 1 both claim parameter '5.bias'",
    ),
    "two rest parts": (
        _p({"kind": "canonical"}, {"kind": "random"}),
        "dictionary.parts: parts 0 and 1 both leave out scope",
    ),
    "nothing left": (
        _p({"kind": "canonical", "scope": ["*"]}, {"kind": "random"}),
        "dictionary.parts[1].scope: no parameter is left",
    ),
    "haar too big": (
        _p({"kind": "random", "method": "haar", "scope": ["1.*"]}),
        "dictionary.parts[0].method: haar needs",
    ),
    "composite scope": (_p({"kind": "canonical"}, scope=["1.*"]), "dictionary.scope: not a key of kind composite"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_composite_specs_raise_one_line_naming_the_field(case, nets):
    spec, needle = BAD[case]
    for check in (lambda: validate(spec, nets["mlp"]), lambda: build(spec, nets["mlp"])):
        with pytest.raises(DictionarySpecError) as err:
            check()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_composite_runs_imp_on_digits():
    """Bottleneck on layer 1 plus canonical elsewhere through a real trajectory (two rounds)."""
    spec = {"kind": "composite", "parts": [{"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"kind": "canonical"}]}
    cfg = TrajectoryConfig(
        dataset="digits",
        model="mlp_300_100",
        dictionary=spec,
        tau=0.5,
        rounds=2,
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05),
    )
    traj = Trajectory(cfg)
    records = traj.run()
    d = traj.dictionary
    assert [r["kept"] for r in records][0] == d.size
    units = 64 + d.size - 300 * 64
    after = traj.state.mask
    kept_units = int(after[: 300 * 64].view(300, 64).any(0).sum()) + int(after[300 * 64 :].sum())
    assert kept_units == units - count_to_remove(units, 0.5)
    assert records[0]["test_accuracy"] > 0.5  # digits: chance is 0.1
