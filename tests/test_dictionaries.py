"""Dictionaries against independent computations: SciPy's DCT, dense matrices, the paper's two
models. Every kind is orthonormal (analyze ∘ synthesize = id, norms kept), linear, and its
gradient is its transpose; each kind's structure (mixing, locality, groups, U) is checked
on real numbers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from glth_core import dictionaries
from glth_core.dictionaries import DictionarySpecError, build, label_of, validate
from glth_core.dictionaries.dct import dct, dct2, dct_matrix, idct, idct2, smooth_split
from glth_core.dictionaries.haar import haar
from glth_core.dictionaries.movable import Movable
from glth_core.dictionaries.transforms import FastRotation

torch.set_num_threads(1)
IMAGE = (3, 32, 32)


def cnn_paper() -> nn.Sequential:
    """The paper's Fig. 2 left CNN: 28,950 parameters."""
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2704, 10),
    )
    m.input_shape = IMAGE
    return m


def mlp_300_100() -> nn.Sequential:
    """The paper's Fig. 2 right MLP: 953,010 parameters."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(3072, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    m.input_shape = IMAGE
    return m


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"cnn": cnn_paper(), "mlp": mlp_300_100()}


@pytest.fixture(scope="module")
def images():
    return torch.randn(256, *IMAGE, generator=torch.Generator().manual_seed(1))


_BUILT: dict = {}


def built(models, images, model: str, spec: dict):
    """Each (model, spec) is built once per session: the dense bases take seconds."""
    key = (model, repr(sorted(spec.items())))
    if key not in _BUILT:
        _BUILT[key] = build(spec, models[model], train_x=images)
    return _BUILT[key]


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.detach().double() - y.detach().double()).norm() / y.detach().double().norm())


# -- transforms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 193, 1000, 28950])
def test_dct_and_idct_match_scipy_for_any_length(n):
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    assert np.allclose(dct(x).numpy(), scipy.fft.dct(x.numpy(), norm="ortho"), atol=1e-12)
    assert np.allclose(idct(x).numpy(), scipy.fft.idct(x.numpy(), norm="ortho"), atol=1e-12)
    assert _rel(dct(x.float()), torch.from_numpy(scipy.fft.dct(x.numpy(), norm="ortho"))) < 1e-5
    assert _rel(idct(dct(x.float())), x) < 1e-5
    if n <= 1000:
        assert np.allclose(dct_matrix(n).numpy(), scipy.fft.dct(np.eye(n), axis=0, norm="ortho"), atol=1e-12)


def test_dct2_matches_scipy_dctn_per_plane():
    x = torch.randn(2, 3, 32, 24, dtype=torch.float64)
    assert np.allclose(dct2(x).numpy(), scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho"), atol=1e-12)
    assert np.allclose(idct2(x).numpy(), scipy.fft.idctn(x.numpy(), axes=(-2, -1), norm="ortho"), atol=1e-12)
    assert _rel(dct2(x.float()), dct2(x)) < 1e-5


def test_haar_is_seeded_orthogonal_with_positive_r_diagonal():
    q = haar(64, 5)
    assert q.dtype == torch.float32 and q.shape == (64, 64)
    assert torch.allclose(q.double() @ q.double().T, torch.eye(64, dtype=torch.float64), atol=1e-5)
    assert torch.equal(q, haar(64, 5)) and not torch.allclose(q, haar(64, 6))
    gauss = torch.randn(64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    r = q.double().T @ gauss  # = R with the sign fix: upper triangular, positive diagonal
    assert torch.tril(r, -1).abs().max() < 1e-4 * r.abs().max()
    assert (torch.diagonal(r) > 0).all()


def test_smooth_split_covers_the_length_with_fft_friendly_parts():
    for n in (1, 7, 193, 28950, 953010):
        parts = smooth_split(n)
        assert sum(parts) == n and len(parts) <= 4
        for p in parts:
            for prime in (2, 3, 5, 7):
                while p % prime == 0:
                    p //= prime
            assert p == 1


# -- every kind: orthonormal, linear, gradient = transpose ---------------------------------------
CASES = [
    ("cnn", {"kind": "canonical"}),
    ("cnn", {"kind": "random", "seed": 3}),
    ("cnn", {"kind": "random", "method": "haar", "seed": 3, "scope": ["4.*", "7.bias"]}),
    ("cnn", {"kind": "random", "method": "fast", "scope": ["2.weight"]}),
    *[
        ("cnn", {"kind": "blockdiag", "per": per, "block": block, "seed": 1})
        for per in ("tensor", "unit")
        for block in ("canonical", "random", "dct")
    ],
    ("cnn", {"kind": "bottleneck", "layer": "7", "basis": "identity"}),
    ("cnn", {"kind": "bottleneck", "layer": "7", "basis": "random", "seed": 2}),
    ("mlp", {"kind": "canonical", "scope": ["3.*"]}),
    ("mlp", {"kind": "random", "seed": 0}),
    ("mlp", {"kind": "random", "method": "haar", "scope": ["5.*"]}),
    *[
        ("mlp", {"kind": "blockdiag", "per": per, "block": block, "seed": 4})
        for per in ("tensor", "unit")
        for block in ("canonical", "random", "dct")
    ],
    *[
        ("mlp", {"kind": "bottleneck", "layer": "1", "basis": basis, "seed": 0})
        for basis in ("identity", "dct", "random")
    ],
    ("mlp", {"kind": "bottleneck", "layer": "3", "basis": "pca"}),
]


def _case_id(case):
    model, spec = case
    return "-".join([model, *(str(v) for k, v in spec.items() if k not in ("kind", "seed"))]).replace("*", "")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_orthonormal_linear_and_gradient_is_the_transpose(case, models, images):
    model, spec = case
    d = built(models, images, model, spec)
    g = torch.Generator().manual_seed(7)
    a, b, u = (torch.randn(d.size, generator=g) for _ in range(3))
    w = d.synthesize(a)
    assert w.shape == (d.size,) and w.dtype == torch.float32
    assert _rel(d.analyze(w), a) < 1e-5
    assert abs(float(w.double().norm() / a.double().norm()) - 1) < 1e-5
    assert _rel(d.synthesize(2.5 * a - b), 2.5 * w - d.synthesize(b)) < 1e-5
    # the model's own parameters survive the round trip through coefficients
    params = d.flatten(dict(models[model].named_parameters())).detach()
    assert _rel(d.synthesize(d.analyze(params)), params) < 1e-5
    # backward of synthesize is analyze (Dᵀ), and the adjoint identity <Da, u> = <a, Dᵀu>
    leaf = a.clone().requires_grad_(True)
    (d.synthesize(leaf) * u).sum().backward()
    assert _rel(leaf.grad, d.analyze(u)) < 1e-5
    assert abs(float(w.double() @ u.double() - a.double() @ d.analyze(u).double())) < 1e-5 * float(a.norm() * u.norm())


def test_analyze_accepts_leading_batch_dims(models, images):
    d = built(models, images, "cnn", {"kind": "random", "seed": 3})
    a = torch.randn(4, d.size)
    assert _rel(d.synthesize(a)[2], d.synthesize(a[2])) < 1e-6


def _tensors(obj, seen):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple, dict)):
        for v in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(v, seen)
    elif isinstance(obj, Movable):
        for v in vars(obj).values():
            yield from _tensors(v, seen)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "random"},
        {"kind": "blockdiag", "per": "unit", "block": "random"},
        {"kind": "blockdiag", "per": "tensor", "block": "dct"},
        {"kind": "bottleneck", "layer": "1", "basis": "dct"},
        {"kind": "bottleneck", "layer": "1", "basis": "random"},
    ],
    ids=lambda s: "-".join(map(str, s.values())),
)
def test_to_moves_every_tensor_the_dictionary_holds(spec):
    m = nn.Sequential(nn.Flatten(), nn.Linear(48, 30), nn.ReLU(), nn.Linear(30, 10))
    m.input_shape = (3, 4, 4)
    d = build(spec, m).to("meta")  # a device with no data: any tensor left behind would fail below
    assert {t.device.type for t in _tensors(d, set())} <= {"meta"}
    a = torch.empty(d.size, device="meta")
    assert d.synthesize(a).device.type == d.analyze(a).device.type == "meta"


# -- random ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_fast_rotation_mixes_every_coordinate_into_every_element(model, models, images):
    d = built(models, images, model, {"kind": "random", "seed": 0} if model == "mlp" else {"kind": "random", "seed": 3})
    for i in (0, d.size // 2, d.size - 1):
        e = torch.zeros(d.size)
        e[i] = 1.0
        w = d.synthesize(e)
        assert (w != 0).all(), f"unit coefficient {i} reaches only {(w != 0).sum()} of {d.size} parameters"
        assert float(w.abs().max()) < 0.1  # spread, not a few large entries


def test_random_dictionaries_depend_on_the_seed_only(models):
    m = models["cnn"]
    a = torch.randn(28950)
    for method, scope in (("fast", None), ("haar", ["4.*"])):
        spec = {"kind": "random", "method": method, "scope": scope}
        one, again, other = (build({**spec, "seed": s}, m) for s in (1, 1, 2))
        x = a[: one.size]
        assert torch.equal(one.synthesize(x), again.synthesize(x))
        assert not torch.allclose(one.synthesize(x), other.synthesize(x))


def test_haar_random_refused_above_40000_elements(models):
    spec = {"kind": "random", "method": "haar"}
    for check in (lambda: build(spec, models["mlp"]), lambda: validate(spec, models["mlp"])):
        with pytest.raises(DictionarySpecError, match="dictionary.method.*fast"):
            check()
    validate(spec, models["cnn"])  # 28,950: allowed (and not built by validate)


def test_fast_rotation_is_one_rotation_per_row():
    rot = FastRotation(500, [11, 12])
    a = torch.randn(2, 500, dtype=torch.float64)
    both = rot.synthesize(a)
    assert torch.allclose(rot.analyze(both), a, atol=1e-12)
    assert torch.allclose(FastRotation(500, [12]).synthesize(a[1:]), both[1:], atol=1e-12)
    assert not torch.allclose(FastRotation(500, [11]).synthesize(a[1:]), both[1:])


# -- blockdiag ------------------------------------------------------------------------------------
def _row_slice(d, name: str, row: int = 0) -> slice:
    """Where unit ``row`` of parameter ``name`` sits in the scope vector (a 1-D tensor: all of it)."""
    e = next(e for e in d.scope if e.name == name)
    width = e.numel // e.shape[0] if len(e.shape) >= 2 else e.numel
    return slice(e.offset + row * width, e.offset + (row + 1) * width)


@pytest.mark.parametrize("block", ["canonical", "random", "dct"])
def test_blockdiag_per_unit_blocks_stay_inside_their_unit(block, models, images):
    d = built(models, images, "cnn", {"kind": "blockdiag", "per": "unit", "block": block, "seed": 1})
    for name, row in (("2.weight", 3), ("7.weight", 9), ("4.bias", 0)):
        e = torch.zeros(d.size)
        s = _row_slice(d, name, row)
        e[s] = torch.randn(s.stop - s.start)
        w = d.synthesize(e)
        outside = torch.ones(d.size, dtype=torch.bool)
        outside[s] = False
        assert (w[outside] == 0).all() and w[s].abs().sum() > 0


def test_blockdiag_dct_blocks_match_scipy(models, images):
    m = models["mlp"]
    params = dict(m.named_parameters())
    unit = built(models, images, "mlp", {"kind": "blockdiag", "per": "unit", "block": "dct", "seed": 4})
    tensor = built(models, images, "mlp", {"kind": "blockdiag", "per": "tensor", "block": "dct", "seed": 4})
    w = unit.flatten(params).detach().double()
    coeffs = unit.unflatten(unit.analyze(w))
    expect = scipy.fft.dct(params["3.weight"].detach().double().numpy(), axis=1, norm="ortho")
    assert np.allclose(coeffs["3.weight"].numpy(), expect, atol=1e-10)
    expect = scipy.fft.dct(params["3.weight"].detach().double().numpy().reshape(-1), norm="ortho")
    assert np.allclose(tensor.unflatten(tensor.analyze(w))["3.weight"].reshape(-1).numpy(), expect, atol=1e-10)


def test_blockdiag_random_blocks_have_their_own_seeded_rotation(models, images):
    d = built(models, images, "mlp", {"kind": "blockdiag", "per": "unit", "block": "random", "seed": 4})
    rows = [_row_slice(d, "3.weight", r) for r in (0, 1)]
    e = torch.zeros(d.size)
    e[rows[0].start] = e[rows[1].start] = 1.0
    w = d.synthesize(e)
    assert not torch.allclose(w[rows[0]], w[rows[1]])  # unit 0 and unit 1 are rotated differently
    other = build({"kind": "blockdiag", "per": "unit", "block": "random", "seed": 5}, models["mlp"])
    assert not torch.allclose(other.synthesize(e)[rows[0]], w[rows[0]])


# -- bottleneck -----------------------------------------------------------------------------------
def test_bottleneck_groups_scope_and_attributes(models, images):
    d = built(models, images, "mlp", {"kind": "bottleneck", "layer": "1", "basis": "dct", "seed": 0})
    assert d.scope_names == ("1.weight",) and d.size == 300 * 3072
    assert (d.layer, d.d_in, d.d_out, d.basis) == ("1", 3072, 300, "dct")
    assert d.groups.shape == (d.size,) and d.groups.dtype == torch.long
    assert torch.equal(d.groups.view(300, 3072), torch.arange(3072).expand(300, 3072))
    assert d.num_groups == 3072
    assert d.is_input_layer
    assert not built(models, images, "mlp", {"kind": "bottleneck", "layer": "3", "basis": "pca"}).is_input_layer
    assert not built(models, images, "cnn", {"kind": "bottleneck", "layer": "7", "basis": "identity"}).is_input_layer


@pytest.mark.parametrize(
    "model,layer,basis",
    [
        ("mlp", "1", "identity"),
        ("mlp", "1", "dct"),
        ("mlp", "1", "random"),
        ("mlp", "3", "pca"),
        ("cnn", "7", "random"),
    ],
)
def test_bottleneck_is_w_equals_c_u_transpose(model, layer, basis, models, images):
    d = built(
        models,
        images,
        model,
        {"kind": "bottleneck", "layer": layer, "basis": basis, "seed": 2 if model == "cnn" else 0},
    )
    U = d.U.double()
    assert U.shape == (d.d_in, d.d_in)
    assert torch.allclose(U.T @ U, torch.eye(d.d_in, dtype=torch.float64), atol=1e-5)
    C = torch.randn(d.d_out, d.d_in, dtype=torch.float64)
    assert _rel(d.synthesize(C.reshape(-1)).view(d.d_out, d.d_in), C @ U.T) < 1e-5
    W = torch.randn(d.d_out, d.d_in, dtype=torch.float64)
    a = d.analyze(W.reshape(-1))
    assert _rel(a, (W @ U).reshape(-1)) < 1e-5  # element k·d_in + ℓ: unit k on column ℓ
    # removing group ℓ removes column ℓ of U from every unit: W_kept = W (I − u_ℓ u_ℓᵀ)
    pruned = d.synthesize(a * (d.groups != 5)).view(d.d_out, d.d_in)
    assert _rel(pruned, W - (W @ U[:, 5:6]) @ U[:, 5:6].T) < 1e-5


def test_bottleneck_dct_u_is_the_per_plane_dctn(models, images):
    d = built(models, images, "mlp", {"kind": "bottleneck", "layer": "1", "basis": "dct", "seed": 0})
    x = images[:4].double()
    expect = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho").reshape(4, -1)
    assert np.allclose((x.flatten(1) @ d.U.double()).numpy(), expect, atol=1e-5)
    assert np.allclose(d.transform_inputs(x).numpy(), expect, atol=1e-10)  # the FFT path


@pytest.mark.parametrize("basis", ["identity", "dct", "random"])
def test_transformed_inputs_with_weight_c_give_the_same_network(basis, models, images):
    m = models["mlp"]
    d = built(models, images, "mlp", {"kind": "bottleneck", "layer": "1", "basis": basis, "seed": 0})
    C = torch.randn(d.d_out, d.d_in) * 0.02
    x = images[:16]
    whole = functional_call(m, {"1.weight": d.synthesize(C.reshape(-1)).view(d.d_out, d.d_in)}, (x,))
    first = F.linear(d.transform_inputs(x), C, m[1].bias)
    assert _rel(m[2:](first), whole) < 1e-5
    assert _rel(F.linear(d.transform_inputs(x.flatten(1)), C, m[1].bias), first) < 1e-6


def test_pca_basis_diagonalizes_the_layer_inputs(models, images):
    m = models["mlp"]
    d = built(models, images, "mlp", {"kind": "bottleneck", "layer": "3", "basis": "pca"})
    with torch.no_grad():
        h = m[2](m[1](images.flatten(1))).double()  # what layer "3" sees
    cov = torch.cov(h.T, correction=0)
    U = d.U.double()
    proj = U.T @ cov @ U
    variances = torch.diagonal(proj)
    assert (variances[:-1] >= variances[1:] - 1e-6).all() and variances[0] > variances[-1]
    assert (proj - torch.diag(variances)).abs().max() < 1e-4 * variances[0]
    assert torch.allclose(variances, torch.linalg.eigvalsh(cov).flip(0), atol=1e-4 * float(variances[0]))
    peaks = U.gather(0, U.abs().argmax(0, keepdim=True))
    assert (peaks > 0).all()  # deterministic signs


def test_pca_on_the_input_layer_uses_the_images():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    m.input_shape = (3, 4, 4)
    x = torch.randn(500, 3, 4, 4) * torch.linspace(0.1, 2.0, 48).view(3, 4, 4)
    d = build({"kind": "bottleneck", "layer": "1", "basis": "pca"}, m, train_x=x)
    assert d.is_input_layer
    top = d.U[:, 0].double()
    _, vecs = np.linalg.eigh(np.cov(x.flatten(1).double().numpy().T, bias=True))
    assert abs(abs(float(top @ torch.from_numpy(vecs[:, -1]))) - 1) < 1e-6


# -- specs, labels, description -------------------------------------------------------------------
def test_labels_and_describe(models, images):
    assert label_of({"kind": "canonical"}) == "canonical"
    assert label_of({"kind": "random"}) == "random-fast"
    assert label_of({"kind": "random", "method": "haar", "seed": 9}) == "random-haar"
    assert label_of({"kind": "blockdiag", "per": "unit", "block": "dct"}) == "blockdiag-unit-dct"
    assert label_of({"kind": "bottleneck", "layer": 1, "basis": "identity"}) == "bottleneck-identity"
    assert label_of({"kind": "random", "scope": ["5.*"], "label": "random-head@5"}) == "random-head@5"
    d = built(models, images, "mlp", {"kind": "bottleneck", "layer": "1", "basis": "dct", "seed": 0})
    assert d.describe() == {"dictionary": "bottleneck-dct", "dictionary_kind": "bottleneck", "basis": "dct"}
    d = built(models, images, "cnn", {"kind": "random", "seed": 3})
    assert d.describe() == {"dictionary": "random-fast", "dictionary_kind": "random", "basis": "fast"}
    d = built(models, images, "cnn", {"kind": "canonical"})
    assert d.describe() == {"dictionary": "canonical", "dictionary_kind": "canonical", "basis": ""}
    assert d.groups is None and d.size == 28950
    assert built(models, images, "mlp", {"kind": "random", "seed": 0}).size == 953010
    assert set(dictionaries.KINDS) == {"canonical", "random", "blockdiag", "bottleneck", "channels", "composite"}


BAD = {
    "not a mapping": ("random", "dictionary"),
    "no kind": ({"basis": "dct"}, "dictionary.kind"),
    "unknown kind": (
        {"kind": "wavelet"},
        "dictionary.kind: 'wavelet' is not one of canonical, random, blockdiag, bottleneck",
    ),
    "unknown key": ({"kind": "random", "speed": 3}, "dictionary.speed"),
    "canonical has no seed": ({"kind": "canonical", "seed": 1}, "dictionary.seed"),
    "bad method": ({"kind": "random", "method": "slow"}, "dictionary.method: 'slow' is not one of fast, haar"),
    "negative seed": ({"kind": "random", "seed": -1}, "dictionary.seed"),
    "seed not int": ({"kind": "random", "seed": "1"}, "dictionary.seed"),
    "scope matches nothing": ({"kind": "random", "scope": ["9.*"]}, "dictionary.scope"),
    "scope not names": ({"kind": "canonical", "scope": [1]}, "dictionary.scope"),
    "bad per": (
        {"kind": "blockdiag", "per": "layer", "block": "dct"},
        "dictionary.per: 'layer' is not one of tensor, unit",
    ),
    "bad block": (
        {"kind": "blockdiag", "block": "haar"},
        "dictionary.block: 'haar' is not one of canonical, random, dct",
    ),
    "missing block": ({"kind": "blockdiag"}, "dictionary.block"),
    "bad basis": (
        {"kind": "bottleneck", "layer": "1", "basis": "foo"},
        "dictionary.basis: 'foo' is not one of identity, dct, random, pca",
    ),
    "missing basis": ({"kind": "bottleneck", "layer": "1"}, "dictionary.basis"),
    "missing layer": ({"kind": "bottleneck", "basis": "dct"}, "dictionary.layer"),
    "layer absent": (
        {"kind": "bottleneck", "layer": "9", "basis": "identity"},
        "dictionary.layer: '9' is not in the model; Linear layers: 1, 3, 5",
    ),
    "layer not Linear": ({"kind": "bottleneck", "layer": "2", "basis": "identity"}, "dictionary.layer: '2' is a ReLU"),
    "dct on hidden layer": (
        {"kind": "bottleneck", "layer": "3", "basis": "dct"},
        "dictionary.basis: dct needs an image input",
    ),
    "bottleneck scope": (
        {"kind": "bottleneck", "layer": "1", "basis": "identity", "scope": ["3.weight"]},
        "dictionary.scope",
    ),
    "bad label": ({"kind": "canonical", "label": "a/b"}, "dictionary.label"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_specs_raise_one_line_naming_the_field(case, models):
    spec, needle = BAD[case]
    for check in (lambda: validate(spec, models["mlp"]), lambda: build(spec, models["mlp"])):
        with pytest.raises(DictionarySpecError) as err:
            check()
        msg = str(err.value)
        assert needle in msg and "\n" not in msg


def test_dct_basis_needs_the_model_input_shape_and_pca_needs_train_x(models):
    m = mlp_300_100()
    del m.input_shape
    with pytest.raises(DictionarySpecError, match="dct needs an image input"):
        build({"kind": "bottleneck", "layer": "1", "basis": "dct"}, m)
    spec = {"kind": "bottleneck", "layer": "3", "basis": "pca"}
    validate(spec, models["mlp"])  # nothing to estimate yet
    with pytest.raises(DictionarySpecError, match="dictionary.basis: pca needs the training inputs"):
        build(spec, models["mlp"])
    assert not build(
        {"kind": "bottleneck", "layer": "1", "basis": "identity"}, m
    ).is_input_layer  # no shape: general path


def test_blockdiag_dct_runs_its_one_row_blocks_as_one_chain(models):
    m = models["mlp"]
    d = build({"kind": "blockdiag", "per": "tensor", "block": "dct"}, m)
    assert len(d.segments) == 1  # every tensor's DCT in one chain of gathers around per-block FFTs
    w = torch.randn(2, d.size, dtype=torch.float64)
    a = d.analyze(w)
    for e in d.scope:
        expect = scipy.fft.dct(w[:, e.offset : e.offset + e.numel].numpy(), norm="ortho")
        assert np.allclose(a[:, e.offset : e.offset + e.numel].numpy(), expect, atol=1e-10)
    assert torch.allclose(d.synthesize(a), w, atol=1e-10)
