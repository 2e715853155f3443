"""Baselines as the literature runs them: canonical IMP's scope presets, open_lth's sparse_global
rule and its ceil count, layerwise rates, one-shot pruning, and the training-free structured control."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.dictionaries.dct import dct_matrix
from glth_core.imp import Trajectory
from glth_core.sparsify import Segment, sparsify, sparsify_segments
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

SHORT = TrainConfig(steps=10, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _config(**kw) -> TrajectoryConfig:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.3, rounds=3, seed=0, train=SHORT)
    base.update(kw)
    return TrajectoryConfig(**base)


def _mlp():
    torch.manual_seed(0)
    return models.build("mlp_300_100", (1, 8, 8), 10)


# -- scope presets -----------------------------------------------------------------------------------
def test_scope_presets_are_open_lths_prunable_layers():
    mlp, cnn = _mlp(), models.build("cnn_paper", (1, 8, 8), 10)
    names = lambda spec, net: list(dictionaries.build(spec, net).scope_names)  # noqa: E731
    assert names({"kind": "canonical", "scope": "weights"}, mlp) == ["1.weight", "3.weight", "5.weight"]
    assert names({"kind": "canonical", "scope": "weights_but_output"}, mlp) == ["1.weight", "3.weight"]
    assert names({"kind": "canonical", "scope": ["weights_but_output", "5.bias"]}, mlp) == [
        "1.weight",
        "3.weight",
        "5.bias",
    ]
    assert names({"kind": "random", "scope": "weights", "seed": 1}, cnn) == [
        "0.weight",
        "2.weight",
        "4.weight",
        "7.weight",
    ]
    with pytest.raises(
        dictionaries.DictionarySpecError,
        match="dictionary.scope: 'weight' matches no parameter; allowed: weights, weights_but_output",
    ):
        dictionaries.build({"kind": "canonical", "scope": "weight"}, mlp)


# -- open_lth's sparse_global, written out independently in numpy ---------------------------------------
def open_lth_sparse_global(weights: dict, mask: dict, fraction: float, ignore=()) -> dict:
    """open_lth ``pruning/sparse_global.py``: k = ceil(fraction · remaining prunable weights); threshold =
    the k-th entry (0-based) of the sorted |w| of the unpruned prunable weights; keep |w| > threshold."""
    prunable = [k for k in weights if k not in ignore]
    remaining = np.sum([np.sum(mask[k]) for k in prunable])
    k = np.ceil(fraction * remaining).astype(int)
    vector = np.concatenate([weights[n][mask[n] == 1] for n in prunable])
    threshold = np.sort(np.abs(vector))[k]
    new = {n: np.where(np.abs(weights[n]) > threshold, mask[n], np.zeros_like(weights[n])) for n in prunable}
    return {n: new.get(n, mask[n]) for n in weights}


def _flat(d: dict, names) -> np.ndarray:
    return np.concatenate([d[n].reshape(-1) for n in names])


@pytest.mark.parametrize("quantized", [False, True], ids=["distinct", "ties"])
def test_open_lth_rounding_gives_sparse_globals_masks(quantized):
    """Weights of mlp_300_100 (quantized to 1/64 steps for ties), output layer ignored: three rounds of
    our open_lth rule in the scope preset equal three rounds of open_lth's rule on the same weights."""
    net = _mlp()
    names = ["1.weight", "3.weight", "5.weight"]
    weights = {n: p.detach().double().numpy() for n, p in net.named_parameters() if n in names}
    if quantized:
        weights = {n: np.round(w * 64) / 64 for n, w in weights.items()}
    d = dictionaries.build({"kind": "canonical", "scope": "weights_but_output"}, net)
    coeffs = torch.from_numpy(_flat(weights, ["1.weight", "3.weight"]))
    theirs = {n: np.ones_like(w) for n, w in weights.items()}
    ours = torch.ones(d.size, dtype=torch.bool)
    for _ in range(3):
        theirs = open_lth_sparse_global(weights, theirs, 0.2, ignore=("5.weight",))
        ours = sparsify(coeffs, ours, 0.2, rounding="open_lth")
        assert np.array_equal(ours.numpy(), _flat(theirs, ["1.weight", "3.weight"]).astype(bool))
        assert np.all(theirs["5.weight"] == 1)
    if not quantized:  # distinct magnitudes: ceil(0.2 n) + 1 go each round (the threshold's own entry too)
        n = d.size
        for _ in range(3):
            n -= math.ceil(0.2 * n) + 1
        assert int(ours.sum()) == n


def test_ceil_rounding_drops_ceil_tau_n_smallest():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(1001, generator=g, dtype=torch.float64)
    mask = torch.rand(1001, generator=g) < 0.9
    new = sparsify(a, mask, 0.21, rounding="ceil")
    n = int(mask.sum())
    dropped = (mask & ~new).nonzero().flatten()
    assert dropped.numel() == math.ceil(0.21 * n) != round(0.21 * n)  # 187.32: ceil 188, round 187
    assert float(a[dropped].abs().max()) <= float(a[new].abs().min())  # the smallest went
    with pytest.raises(ValueError, match="prune_rounding"):
        _config(prune_rounding="floor")


def test_a_trajectory_prunes_as_open_lth_does(digits):
    """End to end: canonical IMP with open_lth's scope and rule; round 1's mask is open_lth's
    sparse_global applied to round 0's trained weights (read back as a network)."""
    traj = Trajectory(
        _config(dictionary={"kind": "canonical", "scope": "weights_but_output"}, prune_rounding="open_lth", tau=0.2),
        data=digits,
    )
    traj.run_round()
    trained = {n: p.detach().double().numpy() for n, p in traj.scope_weights().items()}
    names = ["1.weight", "3.weight"]
    theirs = open_lth_sparse_global({n: trained[n] for n in names}, {n: np.ones_like(trained[n]) for n in names}, 0.2)
    assert np.array_equal(traj.state.mask.numpy(), _flat(theirs, names).astype(bool))
    assert traj.run_round()["kept"] == int(traj.ticket.mask.sum())


# -- layerwise rates ---------------------------------------------------------------------------------
def _per_tensor_reference(a: torch.Tensor, mask: torch.Tensor, scope, rates: dict) -> torch.Tensor:
    """Each tensor with a rate drops round(τ·n) of its own n survivors by |a| (ties: lower index first);
    tensors without one are pooled and dropped together at rate rates[None]."""
    new = mask.clone()
    pools: dict = {}
    for e in scope:
        key = e.name if e.name in rates else None
        pools.setdefault(key, []).append(torch.arange(e.offset, e.offset + e.numel))
    for key, parts in pools.items():
        idx = torch.cat(parts)
        alive = idx[mask[idx]]
        k = min(max(1, round(rates[key] * alive.numel())), alive.numel() - 1)
        order = sorted(alive.tolist(), key=lambda i: (abs(float(a[i])), i))
        new[order[:k]] = False
    return new


def test_layerwise_and_layer_tau_masks_equal_a_per_tensor_reference(digits):
    a = torch.randn(64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10, generator=torch.Generator().manual_seed(0))
    d = dictionaries.build({"kind": "canonical"}, _mlp())
    ones = torch.ones(d.size, dtype=torch.bool)
    # Frankle & Carbin: every layer at its own 0.2, the output layer at half
    layerwise = Trajectory(_config(pruning="layerwise", layer_tau={"5.weight": 0.1}, tau=0.2), data=digits).mask_rule
    rates = {e.name: 0.2 for e in d.scope} | {"5.weight": 0.1}
    mask = ones
    for _ in range(2):
        expected = _per_tensor_reference(a, mask, d.scope, rates)
        mask = layerwise.next_mask(mask, a, None, 1)
        assert torch.equal(mask, expected)
    kept_out = int(mask[d.scope[4].offset : d.scope[4].offset + 1000].sum())
    assert kept_out == 1000 - 100 - 90  # 10 % of 1000, then 10 % of 900
    pooled = Trajectory(
        _config(layer_tau={"5.weight": 0.1}, tau=0.2), data=digits
    ).mask_rule  # the rest: one global pool
    assert torch.equal(
        pooled.next_mask(ones, a, None, 1), _per_tensor_reference(a, ones, d.scope, {"5.weight": 0.1, None: 0.2})
    )
    segs = [Segment(e.offset, e.offset + e.numel, 0.2) for e in d.scope]
    assert torch.equal(
        sparsify_segments(a, ones, 0.5, None, segs), _per_tensor_reference(a, ones, d.scope, rates | {"5.weight": 0.2})
    )


def test_per_tensor_rates_are_refused_where_tensors_mix(digits):
    with pytest.raises(
        ValueError, match="^pruning: per-tensor selection needs coefficients that each belong to one tensor"
    ):
        Trajectory(_config(dictionary={"kind": "random", "seed": 1}, pruning="layerwise"), data=digits)
    with pytest.raises(ValueError, match="^layer_tau.7.weight: not a tensor of the dictionary's scope"):
        Trajectory(_config(layer_tau={"7.weight": 0.1}), data=digits)
    with pytest.raises(ValueError, match="layer_tau.5.weight: must be a number in"):
        _config(layer_tau={"5.weight": 1.5})
    with pytest.raises(ValueError, match="pruning"):
        _config(pruning="local")
    assert _config(pruning="layerwise", layer_tau={"5.weight": 0.1}).content_hash() != _config().content_hash()


# -- one-shot pruning ----------------------------------------------------------------------------------
def test_oneshot_cuts_every_round_from_the_dense_weights_at_imps_densities(digits):
    imp = Trajectory(_config(rounds=4), data=digits).run()
    oneshot = Trajectory(_config(rounds=4, control="oneshot"), data=digits)
    masks = []
    while not oneshot.done:
        oneshot.run_round()
        masks.append(oneshot.state.mask.clone())
    assert [r["kept"] for r in oneshot.state.records] == [r["kept"] for r in imp]
    dense = oneshot.state.dense_scores.abs()
    for r, kept in zip(oneshot.state.records[1:], masks[:-1]):  # round t trained under the mask cut for it
        expected = torch.zeros_like(kept)
        expected[torch.sort(dense, descending=True, stable=True).indices[: r["kept"]]] = True
        assert torch.equal(kept, expected)


# -- the training-free structured control ----------------------------------------------------------------
def test_dct_group_order_is_by_frequency_u_plus_v(digits):
    d = dictionaries.build({"kind": "bottleneck", "layer": "1", "basis": "dct"}, _mlp())
    c8 = dct_matrix(8)  # row u is frequency u
    U = d.U.double()
    freq = []
    for col in range(64):  # which separable basis image each column of U is, found by projection
        image = U[:, col].view(8, 8)
        u, v = divmod(int((c8 @ image @ c8.T).abs().flatten().argmax()), 8)
        freq.append(u + v)
    order = d.group_order.tolist()
    assert sorted(order) == list(range(64))
    assert [freq[g] for g in order] == sorted(freq)  # non-decreasing frequency
    assert order[:3] == [0, 1, 8]  # DC, then (0, 1) and (1, 0)
    pca = dictionaries.build({"kind": "bottleneck", "layer": "1", "basis": "pca"}, _mlp(), train_x=digits.train_x)
    assert pca.group_order.tolist() == list(range(64))
    assert dictionaries.build({"kind": "bottleneck", "layer": "1", "basis": "identity"}, _mlp()).group_order is None


@pytest.mark.parametrize("basis", ["dct", "pca"])
def test_structured_control_keeps_a_prefix_of_the_order_never_by_magnitude(digits, basis):
    spec = {"kind": "bottleneck", "layer": "1", "basis": basis}
    runs = {}
    for seed in (0, 1):
        traj = Trajectory(_config(dictionary=spec, control="structured", seed=seed), data=digits)
        kept = []
        while not traj.done:
            traj.run_round()
            kept.append(torch.unique(traj.dictionary.groups[traj.state.mask]).tolist())
        runs[seed] = (traj, kept)
    traj, kept = runs[0]
    order = traj.dictionary.group_order.tolist()
    assert [r["rank"] for r in traj.state.records] == [64, 45, 31]  # IMP's group counts at τ = 0.3
    for n, groups in zip([45, 31], kept):
        assert groups == sorted(order[:n])
    if basis == "dct":
        assert kept == runs[1][1]  # a different init and training: the same groups (chosen at initialization)


def test_structured_control_elsewhere_keeps_a_seeded_random_order(digits):
    traj = Trajectory(_config(control="structured", rounds=3), data=digits)
    traj.run()
    again = Trajectory(_config(control="structured", rounds=3, train=TrainConfig(steps=3)), data=digits)
    again.run()
    assert torch.equal(traj.state.mask, again.state.mask)  # the order depends on the seed alone
    with pytest.raises(ValueError, match="control: structured"):
        _config(control="structured", pruning="layerwise")
