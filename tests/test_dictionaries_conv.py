"""Convolutional dictionaries against independent computations: the bottleneck on a Conv2d (im2col
view, W = C Uᵀ with U over one filter's C_in·kh·kw weights) and channel groups (whole input
channels or whole filters). Checked: orthonormality (a dense DᵀD = I on small layers), the im2col
order against F.conv2d, the DCT against SciPy, the PCA against NumPy patches, the groups against
NumPy, and the masks of one sparsify step against a NumPy ranking of group energies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from glth_core import models
from glth_core.dictionaries import DictionarySpecError, build, label_of, validate
from glth_core.dictionaries import bottleneck as bottleneck_mod
from glth_core.sparsify import sparsify, sparsify_dictionary

torch.set_num_threads(1)
BASES = ("identity", "dct", "random", "pca")


def _rel(x, y) -> float:
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    return float((x - y).norm() / y.norm())


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {
        "cnn": models.build("cnn_paper", (3, 32, 32), 10),
        "conv2": models.build("conv2", (3, 8, 8), 10),
        "mlp": models.build("mlp_300_100", (1, 8, 8), 10),
    }


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return {
        "cnn": torch.randn(12, 3, 32, 32, generator=g),
        "conv2": torch.randn(40, 3, 8, 8, generator=g),
        "mlp": torch.randn(40, 1, 8, 8, generator=g),
    }


def _dense(d) -> torch.Tensor:
    """D as a dense matrix (column i = synthesize(e_i)), float64."""
    return d.synthesize(torch.eye(d.size, dtype=torch.float64)).T


def _orthonormal(d, params: dict):
    g = torch.Generator().manual_seed(3)
    a, u = torch.randn(d.size, generator=g), torch.randn(d.size, generator=g)
    w = d.synthesize(a)
    assert _rel(d.analyze(w), a) < 1e-5 and abs(float(w.double().norm() / a.double().norm()) - 1) < 1e-5
    leaf = a.clone().requires_grad_(True)
    (d.synthesize(leaf) * u).sum().backward()
    assert _rel(leaf.grad, d.analyze(u)) < 1e-5  # the gradient of synthesize is analyze = Dᵀ
    flat = d.flatten(params).detach()
    assert _rel(d.synthesize(d.analyze(flat)), flat) < 1e-5
    back = d.unflatten(flat)
    assert all(torch.equal(back[e.name], params[e.name].detach()) for e in d.scope)


# -- orthonormality ---------------------------------------------------------------------------------
CASES = [("cnn", {"kind": "bottleneck", "layer": layer, "basis": b, "seed": 4}) for layer in ("0", "2") for b in BASES]
CASES += [("conv2", {"kind": "bottleneck", "layer": "2", "basis": b, "seed": 1}) for b in BASES]
CASES += [
    (net, {"kind": "channels", "layer": layer, "per": per})
    for net, layer in (("cnn", "2"), ("conv2", "0"), ("mlp", "3"))
    for per in ("in", "out")
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'-'.join(str(v) for v in c[1].values())}")
def test_conv_kinds_are_orthonormal(case, nets, images):
    net, spec = case
    d = build(spec, nets[net], train_x=images[net])
    _orthonormal(d, dict(nets[net].named_parameters()))
    if d.size <= 1200:  # cnn layer "0": 432 weights; a dense DᵀD
        D = _dense(d)
        assert (D.T @ D - torch.eye(d.size, dtype=torch.float64)).abs().max() < 1e-5
    if spec["kind"] == "bottleneck":
        U = d.U.double()
        assert U.shape == (d.d_in, d.d_in) and (U.T @ U - torch.eye(d.d_in, dtype=torch.float64)).abs().max() < 1e-5


# -- the conv bottleneck -------------------------------------------------------------------------------
@pytest.mark.parametrize("basis", BASES)
def test_conv_bottleneck_is_w_equals_c_u_transpose_in_the_im2col_view(basis, nets, images):
    m = nets["cnn"]
    d = build({"kind": "bottleneck", "layer": "2", "basis": basis, "seed": 2}, m, train_x=images["cnn"])
    conv = m[2]
    assert d.scope_names == ("2.weight",) and (d.d_out, d.d_in) == (8, 16 * 9) and d.is_conv and not d.is_input_layer
    assert torch.equal(d.groups.view(8, 144), torch.arange(144).expand(8, 144)) and d.num_groups == 144
    U = d.U.double()
    C = torch.randn(8, 144, dtype=torch.float64)
    W = d.synthesize(C.reshape(-1)).view(8, 144)
    assert _rel(W, C @ U.T) < 1e-5
    # the im2col order: the layer's output is the patches times the flattened filters
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    out = F.conv2d(x, W.view(8, 16, 3, 3))
    rows = bottleneck_mod.patches(conv, x)  # (2·7·7) × 144
    assert _rel((rows @ W.T).view(2, 49, 8).permute(0, 2, 1).reshape(out.shape), out) < 1e-10
    # removing group ℓ removes feature direction u_ℓ from every filter
    a = d.analyze(W.reshape(-1))
    pruned = d.synthesize(a * (d.groups != 7)).view(8, 144)
    assert _rel(pruned, W - (W @ U[:, 7:8]) @ U[:, 7:8].T) < 1e-5


def test_conv_dct_is_the_2d_dct_of_every_kernel(nets):
    m = nets["conv2"]
    d = build({"kind": "bottleneck", "layer": "2", "basis": "dct"}, m)
    W = m[2].weight.detach().double()
    expect = scipy.fft.dctn(W.numpy(), axes=(-2, -1), norm="ortho").reshape(64, -1)
    assert np.allclose(d.analyze(W.reshape(-1)).view(64, -1).numpy(), expect, atol=1e-10)
    # column ℓ of U is one (channel, frequency) basis image: a single channel's 3×3 DCT pattern
    U = d.U.double().numpy()
    basis = scipy.fft.idctn(np.eye(9).reshape(9, 3, 3), axes=(-2, -1), norm="ortho").reshape(9, 9)
    assert np.allclose(U[9 * 5 : 9 * 6, 9 * 5 + 4], basis[4], atol=1e-6)
    assert np.abs(np.delete(U[:, 9 * 5 + 4], np.s_[45:54])).max() == 0


def _numpy_patches(h: np.ndarray, k: int, pad: int) -> np.ndarray:
    h = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(h, (k, k), axis=(2, 3))  # N, C, Ho, Wo, k, k
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, h.shape[1] * k * k)


@pytest.mark.parametrize("net,layer,pad", [("cnn", "2", 0), ("conv2", "0", 1), ("conv2", "2", 1)])
def test_conv_pca_diagonalizes_the_covariance_of_the_input_patches(net, layer, pad, nets, images):
    m, x = nets[net], images[net]
    d = build({"kind": "bottleneck", "layer": layer, "basis": "pca"}, m, train_x=x)
    with torch.no_grad():
        h = m[: int(layer)](x).double().numpy()  # what the layer sees
    cov = np.cov(_numpy_patches(h, 3, pad).T, bias=True)
    U = d.U.double().numpy()
    proj = U.T @ cov @ U
    var = np.diag(proj)
    assert (var[:-1] >= var[1:] - 1e-6 * var[0]).all()
    assert np.abs(proj - np.diag(var)).max() < 1e-4 * var[0]
    assert np.allclose(var, np.linalg.eigvalsh(cov)[::-1], atol=1e-4 * var[0])
    assert (U[np.abs(U).argmax(0), np.arange(U.shape[1])] > 0).all()  # deterministic signs


def test_conv_pca_reads_evenly_spaced_images_up_to_its_patch_budget(nets, images, monkeypatch):
    m, x = nets["conv2"], images["conv2"]
    monkeypatch.setattr(bottleneck_mod, "PCA_CONV_PATCHES", 64 * 5)  # 64 patches per 8×8 image: 5 images
    d = build({"kind": "bottleneck", "layer": "0", "basis": "pca"}, m, train_x=x)
    used = x[torch.linspace(0, 39, 5).round().long()].double().numpy()
    _, vecs = np.linalg.eigh(np.cov(_numpy_patches(used, 3, 1).T, bias=True))
    assert abs(abs(float(d.U[:, 0].double() @ torch.from_numpy(vecs[:, -1]))) - 1) < 1e-6


# -- channels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("net,layer", [("cnn", "2"), ("mlp", "3")])
def test_channel_groups_are_whole_input_channels_or_whole_units(net, layer, nets):
    m = nets[net]
    lay = m.get_submodule(layer)
    shape = tuple(lay.weight.shape)
    d_in = build({"kind": "channels", "layer": layer, "per": "in"}, m)
    expect = np.broadcast_to(np.arange(shape[1]).reshape(1, -1, *[1] * (len(shape) - 2)), shape).reshape(-1)
    assert d_in.scope_names == (f"{layer}.weight",) and np.array_equal(d_in.groups.numpy(), expect)
    d_out = build({"kind": "channels", "layer": layer, "per": "out"}, m)
    expect = np.concatenate(
        [
            np.broadcast_to(np.arange(shape[0]).reshape(-1, *[1] * (len(shape) - 1)), shape).reshape(-1),
            np.arange(shape[0]),
        ]
    )  # a unit's bias is in its group
    assert d_out.scope_names == (f"{layer}.weight", f"{layer}.bias") and np.array_equal(d_out.groups.numpy(), expect)
    assert (d_in.num_groups, d_out.num_groups) == (shape[1], shape[0])
    if net == "mlp":  # on a Linear, per: in is the identity bottleneck
        bn = build({"kind": "bottleneck", "layer": layer, "basis": "identity"}, m)
        assert torch.equal(bn.groups, d_in.groups)


def _numpy_drop(energy: np.ndarray, tau: float) -> set[int]:
    """The groups IMP drops: the round(τ·n) smallest energies (ties to the lower index)."""
    k = min(max(1, round(tau * len(energy))), len(energy) - 1)
    return set(np.argsort(energy, kind="stable")[:k].tolist())


def test_one_sparsify_step_drops_the_lowest_energy_groups(nets):
    m = nets["cnn"]
    W = m[2].weight.detach().double().numpy()
    b = m[2].bias.detach().double().numpy()
    A = scipy.fft.dctn(W, axes=(-2, -1), norm="ortho").reshape(8, -1)
    cases = [
        ({"kind": "bottleneck", "layer": "2", "basis": "dct"}, (A**2).sum(0)),  # a column of U over all filters
        ({"kind": "channels", "layer": "2", "per": "in"}, (W**2).sum((0, 2, 3))),
        ({"kind": "channels", "layer": "2", "per": "out"}, (W**2).sum((1, 2, 3)) + b**2),
    ]
    for spec, energy in cases:
        d = build(spec, m)
        a = d.analyze(d.flatten(dict(m.named_parameters())).detach())
        full = torch.ones(d.size, dtype=torch.bool)
        mask = sparsify_dictionary(a, full, 0.3, d)
        assert torch.equal(mask, sparsify(a, full, 0.3, d.groups))
        dropped = _numpy_drop(energy, 0.3)
        assert set(d.groups[~mask].unique().tolist()) == dropped, spec
        assert int((~mask).sum()) == sum(int((d.groups == g).sum()) for g in dropped)


# -- specs ----------------------------------------------------------------------------------------------
BAD = {
    "layer not a layer": (
        {"kind": "bottleneck", "layer": "1", "basis": "dct"},
        "dictionary.layer: '1' is a ReLU, not an nn.Linear or nn.Conv2d; Linear layers: 7; Conv2d layers: 0, 2, 4",
    ),
    "channels layer absent": (
        {"kind": "channels", "layer": "9", "per": "in"},
        "dictionary.layer: '9' is not in the model",
    ),
    "channels missing layer": ({"kind": "channels", "per": "in"}, "dictionary.layer: missing for kind channels"),
    "channels bad per": (
        {"kind": "channels", "layer": "2", "per": "unit"},
        "dictionary.per: 'unit' is not one of in, out",
    ),
    "channels missing per": ({"kind": "channels", "layer": "2"}, "dictionary.per: missing"),
    "channels has no scope": (
        {"kind": "channels", "layer": "2", "per": "in", "scope": ["2.*"]},
        "dictionary.scope: not a key of kind channels",
    ),
    "conv bottleneck scope": (
        {"kind": "bottleneck", "layer": "2", "basis": "dct", "scope": ["2.bias"]},
        "dictionary.scope",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_conv_specs_raise_one_line_naming_the_field(case, nets):
    spec, needle = BAD[case]
    for check in (lambda: validate(spec, nets["cnn"]), lambda: build(spec, nets["cnn"])):
        with pytest.raises(DictionarySpecError) as err:
            check()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_grouped_convs_are_refused_and_conv_pca_needs_train_x(nets):
    m = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    for spec in (
        {"kind": "bottleneck", "layer": "0", "basis": "identity"},
        {"kind": "channels", "layer": "0", "per": "in"},
    ):
        with pytest.raises(DictionarySpecError, match=r"^dictionary.layer: '0' is a grouped Conv2d \(groups=2\)"):
            validate(spec, m)
    with pytest.raises(DictionarySpecError, match="dictionary.basis: pca needs the training inputs"):
        build({"kind": "bottleneck", "layer": "2", "basis": "pca"}, nets["cnn"])
    assert label_of({"kind": "channels", "layer": 2, "per": "out"}) == "channels-out"
    d = build({"kind": "channels", "layer": "2", "per": "in"}, nets["cnn"])
    assert d.describe() == {"dictionary": "channels-in", "dictionary_kind": "channels", "basis": "in"}
