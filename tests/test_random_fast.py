"""The fast random rotation's versions: version 1 (the original, what a spec without ``version``
means) and version 2 (FFT over 5-smooth planes): orthonormal to 1e-5, every coordinate mixed into
every output, their bases and trial ids pinned, and ``version`` checked like every spec field."""

from __future__ import annotations

import pytest
import torch

from glth_core import dictionaries, models
from glth_core.dictionaries import DictionarySpecError
from glth_core.dictionaries.random import (
    TAIL_MAX,
    TAIL_MIN,
    FastRotation2,
    fft_layout,
    smooth5_at_most,
    with_current_version,
    without_default_version,
)
from glth_core.dictionaries.transforms import FastRotation
from glth_core.trajectory import TrajectoryConfig

ROTATIONS = {1: FastRotation, 2: FastRotation2}


def matrix(op, width: int, dtype=torch.float64, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` (default all) of Dᵀ: row i is D e_i, the image of unit coordinate i."""
    rows = torch.arange(width) if rows is None else rows
    e = torch.zeros(len(rows), 1, width, dtype=dtype)
    e[torch.arange(len(rows)), 0, rows] = 1.0
    return op.synthesize(e).squeeze(1)


@pytest.fixture(scope="module")
def cnn():
    return models.build("cnn_paper", (3, 32, 32), 10)  # whole scope: 28,950 parameters


# -- the layout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1, 64, 256, 257, 1000, 5657, 28_950, 50_610, 266_610, 951_000])
def test_layout_tiles_the_width_with_5_smooth_planes_and_a_small_dense_tail(width):
    blocks, tail = fft_layout(width)
    assert sum(2 * a * b for a, b in blocks) + tail == width
    for a, b in blocks:
        n = a * b
        assert smooth5_at_most(n) == n and a <= b <= 5 * a
    assert tail == width if width <= TAIL_MAX else TAIL_MIN <= tail <= TAIL_MAX
    sizes = [a * b for a, b in blocks]
    assert sizes == sorted(sizes, reverse=True)


def test_layout_of_the_cnn_paper_scope():
    assert fft_layout(28_950) == ([(120, 120)], 150)  # 28,800 = 2·120² complex plane + a 150×150 Haar tail


# -- orthonormal -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("width", [100, 1000])
def test_rotation_matrix_is_orthonormal_in_float32(version, width):
    op = ROTATIONS[version](width, [3])
    d = matrix(op, width, torch.float32)
    assert (d @ d.T - torch.eye(width)).abs().max() < 1e-5
    w = torch.randn(4, 1, width)
    assert (op.analyze(w).squeeze(1) - w.squeeze(1) @ d.T).abs().max() < 1e-5  # analyze = Dᵀ


@pytest.mark.parametrize("version", [1, 2])
def test_whole_cnn_scope_rotation_keeps_norms_and_inner_products(version, cnn):
    d = dictionaries.build({"kind": "random", "seed": 0, "version": version}, cnn)
    assert d.size == 28_950
    x, y = torch.randn(2, d.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    dx, dy = d.synthesize(x), d.synthesize(y)
    assert abs(float(dx.norm() / x.norm()) - 1) < 1e-5
    assert abs(float(dx @ dy - x @ y)) / float(x.norm() * y.norm()) < 1e-5
    assert (d.analyze(dx) - x).abs().max() < 1e-5
    assert d.analyze(dx).dtype == torch.float32


def test_version_2_is_orthogonal_to_float64_precision():
    op = FastRotation2(1000, [1])
    d = matrix(op, 1000)
    assert (d @ d.T - torch.eye(1000, dtype=torch.float64)).abs().max() < 1e-12


# -- every coordinate mixes into every output -----------------------------------------------------
# float64: an exact zero of the structure shows as < 1e-15; a generic entry of a w×w orthogonal
# matrix is ~1/√w, the smallest of w² of them ~1/w^2.5 (1e-8 at w = 1000, 2e-10 at w = 5657)
@pytest.mark.parametrize("width,seed", [(257, 0), (300, 1), (1000, 2)])
def test_every_coordinate_reaches_every_output_all_coordinates(width, seed):
    for version, cls in ROTATIONS.items():
        assert matrix(cls(width, [seed]), width).abs().min() > 1e-13, f"version {version}"


def _hard_coordinates(op: FastRotation2, rng: torch.Generator, extra: int) -> torch.Tensor:
    """The coordinates that stage 1 sends into the smallest pieces (the last block, the tail),
    plus ``extra`` random ones: where a missed piece would show."""
    perm = op.gathers[0].idx  # output position i reads input perm[i]
    last = sum(2 * a * b for a, b in op.blocks[:-1])
    return torch.unique(torch.cat([perm[last:], torch.randint(0, op.width, (extra,), generator=rng)]))


@pytest.mark.parametrize("width", [5657, 28_950])
def test_every_coordinate_reaches_every_output_multi_block_and_cnn_scope(width):
    op = FastRotation2(width, [0])
    assert len(op.blocks) == (2 if width == 5657 else 1) and op.tail > 0
    rows = _hard_coordinates(op, torch.Generator().manual_seed(0), 64)
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))[:400]]
    images = matrix(op, width, rows=rows)
    assert images.abs().min() > 1e-13
    assert images.abs().max() < 0.2  # spread, not a few large entries


def test_plain_dft_planes_would_leave_exact_zeros_the_phases_remove():
    """Why version 2 has random phases: without them, the real part of a plane's DC input reaches
    no imaginary part (cos/sin of multiples of π/2 are exactly 0)."""
    z = torch.zeros(8, 12, dtype=torch.complex128)
    z[0, 0] = 1.0
    plain = torch.view_as_real(torch.fft.fft2(z, norm="ortho"))
    assert (plain[..., 1] == 0).all()
    phase = torch.polar(
        torch.ones(8, 12, dtype=torch.float64),
        torch.rand(8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6.28,
    )
    assert torch.view_as_real(torch.fft.fft2(z * phase, norm="ortho")).abs().min() > 1e-3


# -- pinned: each version's basis, and what a spec means -------------------------------------------
PINNED_BASIS = {  # D e_0 at width 1000, seed 5: its first four and last entries
    1: ([0.0564498755, -0.0236998043, -0.0250689975, -0.0279111779], 0.0114741077),
    2: ([-0.0002315991, 0.0308707357, 0.0006290397, 0.0227816749], -0.013205236),
}


@pytest.mark.parametrize("version", [1, 2])
def test_each_version_is_the_basis_it_always_was(version):
    col = matrix(ROTATIONS[version](1000, [5]), 1000, rows=torch.tensor([0]))[0]
    head, last = PINNED_BASIS[version]
    assert torch.allclose(col[:4], torch.tensor(head, dtype=torch.float64), atol=1e-8)
    assert abs(float(col[-1]) - last) < 1e-8


def test_a_spec_without_version_is_version_1_and_builds_it(cnn):
    assert isinstance(dictionaries.build({"kind": "random"}, cnn).segments[0].op, FastRotation)
    assert isinstance(dictionaries.build({"kind": "random", "version": 2}, cnn).segments[0].op, FastRotation2)
    same = torch.randn(28_950)
    assert torch.equal(
        dictionaries.build({"kind": "random", "seed": 4}, cnn).synthesize(same),
        dictionaries.build({"kind": "random", "seed": 4, "version": 1}, cnn).synthesize(same),
    )


#: trial ids of random-fast trajectories: the stored ones (no version) must never change
PINNED_IDS = {
    "c91e7843aafa": {"kind": "random", "method": "fast"},  # as stored before versions: version 1
    "3f4c7ff11004": {"kind": "random", "method": "fast", "version": 2},
}


@pytest.mark.parametrize("trial_id", sorted(PINNED_IDS))
def test_trial_ids_of_both_versions_are_pinned(trial_id):
    config = TrajectoryConfig(model="cnn_paper", dictionary=PINNED_IDS[trial_id], seed=2)
    assert config.content_hash() == trial_id
    # the trial's dictionary spec says which algorithm it means (absent = 1)
    assert config.dictionary_spec.get("version", 1) == PINNED_IDS[trial_id].get("version", 1)


def test_with_current_version_records_2_on_random_fast_specs_only():
    assert with_current_version({"kind": "random"}) == {"kind": "random", "version": 2}
    assert with_current_version({"kind": "random", "method": "fast", "version": 1})["version"] == 1
    for spec in ({"kind": "random", "method": "haar"}, {"kind": "canonical"}, {"kind": "bottleneck", "layer": "1"}):
        assert with_current_version(spec) == spec
    composite = {"kind": "composite", "parts": [{"kind": "random", "scope": ["1.*"]}, {"kind": "canonical"}]}
    assert with_current_version(composite)["parts"] == [
        {"kind": "random", "scope": ["1.*"], "version": 2},
        {"kind": "canonical"},
    ]
    new = with_current_version({"kind": "random", "method": "fast", "seed": 1})
    assert (
        TrajectoryConfig(model="cnn_paper", dictionary=new).content_hash()
        != TrajectoryConfig(
            model="cnn_paper", dictionary={"kind": "random", "method": "fast", "seed": 1}
        ).content_hash()
    )


def test_without_default_version_makes_version_1_the_spec_stored_before_versions():
    assert without_default_version({"kind": "random", "method": "fast", "version": 1}) == {
        "kind": "random",
        "method": "fast",
    }
    assert without_default_version({"kind": "random", "version": 2}) == {"kind": "random", "version": 2}
    old = TrajectoryConfig(model="cnn_paper", dictionary={"kind": "random", "method": "fast"}, seed=2)
    explicit = TrajectoryConfig(
        model="cnn_paper",
        seed=2,
        dictionary=without_default_version({"kind": "random", "method": "fast", "version": 1}),
    )
    assert explicit.content_hash() == old.content_hash() == "c91e7843aafa"
    composite = {"kind": "composite", "parts": [{"kind": "random", "version": 1}, {"kind": "canonical"}]}
    assert without_default_version(composite)["parts"] == [{"kind": "random"}, {"kind": "canonical"}]


@pytest.mark.parametrize("bad", [3, 0, "2", 2.0, True, None])
def test_bad_version_is_one_line_naming_the_field_and_allowed_values(bad, cnn):
    with pytest.raises(DictionarySpecError, match=r"^dictionary\.version: .* is not one of 1, 2$"):
        dictionaries.validate({"kind": "random", "version": bad}, cnn)


def test_haar_has_only_version_1(cnn):
    scope = {"kind": "random", "method": "haar", "scope": ["7.*"]}
    dictionaries.validate({**scope, "version": 1}, cnn)
    with pytest.raises(DictionarySpecError, match=r"^dictionary\.version: 2 is for method: fast"):
        dictionaries.validate({**scope, "version": 2}, cnn)


# -- rows, batches, gradients, devices --------------------------------------------------------------
def test_version_2_is_one_rotation_per_row_and_vmaps():
    rot = FastRotation2(700, [11, 12])
    a = torch.randn(5, 2, 700, dtype=torch.float64)
    both = rot.synthesize(a)
    assert (rot.analyze(both) - a).abs().max() < 1e-12
    assert torch.equal(FastRotation2(700, [12]).synthesize(a[:, 1:]), both[:, 1:])
    assert not torch.allclose(FastRotation2(700, [11]).synthesize(a[:, 1:]), both[:, 1:])
    assert torch.equal(torch.vmap(rot.synthesize)(a), both)
    leaf = a[0].clone().requires_grad_(True)
    g = torch.randn(2, 700, dtype=torch.float64)
    (rot.synthesize(leaf) * g).sum().backward()
    assert torch.allclose(leaf.grad, rot.analyze(g), atol=1e-12)  # the gradient of D a is Dᵀ g


def test_version_2_moves_every_tensor(cnn):
    d = dictionaries.build({"kind": "random", "seed": 1, "version": 2}, cnn).to("meta")
    op = d.segments[0].op
    tensors = [g.idx for g in op.gathers + op.inverses] + op.exact["phase"] + op.exact["tail"]
    assert {t.device.type for t in tensors} == {"meta"}
    assert d.synthesize(torch.empty(d.size, device="meta")).device.type == "meta"
