"""The bottleneck dictionary (paper §3): on one nn.Linear, every unit's incoming weights are
coefficients over one shared orthogonal U (d_in × d_in): W = C Uᵀ, i.e. row w_k = U c_k.

The scope is that layer's weight alone. Element k·d_in + ℓ is unit k's coefficient on column
ℓ of U, and the group of every element is ℓ: IMP removes column ℓ of U from all units at
once, so the pruned layer factors as (x U_kept) C_keptᵀ, a rank-m bottleneck.

On an nn.Conv2d (groups = 1) the same construction acts on the im2col view: a filter's
d_in = C_in·kh·kw weights (row-major, as ``F.unfold`` orders a patch) are its coefficients over
U, shared by all filters, so pruning column ℓ removes one patch feature from every filter and
the layer factors as a kh×kw conv to m channels followed by a 1×1 conv.

``basis``: identity (U = I: pruning ignores inputs), dct (U's columns are 2-D DCT basis
images, one orthonormal DCT per input channel plane: x U = per-plane dctn(x); on a Conv2d, the
2-D DCT of each kh×kw kernel, so pruning removes spatial frequencies of every filter), random
(seeded Haar) or pca (eigenvectors of the covariance of the layer's inputs over the training
set, largest variance first; on a Conv2d, of its im2col input patches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glth_core.dictionaries.blocks import BlockDictionary, Segment
from glth_core.dictionaries.dct import dct_matrix
from glth_core.dictionaries.haar import haar
from glth_core.dictionaries.options import LAYER, SCOPE, SEED, DictionarySpecError, one_of
from glth_core.dictionaries.scope import ScopeEntry, layer_of
from glth_core.dictionaries.transforms import DCTRows, IdentityRows, MatrixRows

PCA_BATCH = 4096
#: a Conv2d's PCA reads at most this many im2col patches (whole images, evenly spaced over the
#: training set), and at most PCA_BATCH_ENTRIES patch entries at a time
PCA_CONV_PATCHES = 2**17
PCA_BATCH_ENTRIES = 2**23


class _Stop(Exception):
    """Raised by a hook to skip the rest of a forward pass once the layer's input is seen."""


def _layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor, called: list | None = None) -> torch.Tensor:
    """What ``layer`` receives when ``model`` runs on ``x``, as rows of d_in features (the
    forward stops there; modules are in eval mode meanwhile so BatchNorm statistics stay put).
    ``called`` collects the leaf modules that ran before ``layer``."""
    seen = _raw_input(model, layer, x, called)
    return seen.reshape(-1, seen.shape[-1])


def _raw_input(model: nn.Module, layer: nn.Module, x: torch.Tensor, called: list | None = None) -> torch.Tensor:
    """``layer``'s input tensor as it is (N×C×H×W for a Conv2d); see ``_layer_input``."""
    seen = []

    def hook(module, args):
        if module is layer:
            seen.append(args[0])
            raise _Stop
        if called is not None:
            called.append(module)

    leaves = [m for m in model.modules() if not list(m.children())] if called is not None else [layer]
    handles = [m.register_forward_pre_hook(hook) for m in leaves]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if not seen:
        raise DictionarySpecError("dictionary.layer: the layer is never called by the model's forward")
    return seen[0]


def patches(layer: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
    """The im2col rows of a Conv2d's input: (N·L) × (C_in·kh·kw), features ordered as the
    flattened weight of one filter, so ``patches @ W.reshape(out, -1).T`` is the conv's output."""
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    h = F.pad(h, layer._reversed_padding_repeated_twice, mode=mode)
    cols = F.unfold(h, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _pca_batches(model: nn.Module, layer: nn.Module, train_x: torch.Tensor):
    """The layer's input rows (d_in features each) over the training inputs, batch by batch: every
    input of a Linear; for a Conv2d, the patches of at most PCA_CONV_PATCHES // L evenly spaced
    images (L patches each)."""
    device = next(layer.parameters()).device
    if isinstance(layer, nn.Linear):
        for start in range(0, train_x.shape[0], PCA_BATCH):
            yield _layer_input(model, layer, train_x[start : start + PCA_BATCH].to(device))
        return
    per_image = patches(layer, _raw_input(model, layer, train_x[:1].to(device))).shape[0]
    n = min(train_x.shape[0], max(1, PCA_CONV_PATCHES // per_image))
    index = torch.linspace(0, train_x.shape[0] - 1, n).round().long()
    step = max(1, PCA_BATCH_ENTRIES // (per_image * layer.weight[0].numel()))
    for start in range(0, n, step):
        yield patches(layer, _raw_input(model, layer, train_x[index[start : start + step]].to(device)))


def _pca_basis(model: nn.Module, layer: nn.Module, train_x: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the covariance of the layer's inputs, by decreasing eigenvalue (float64
    eigh); each column's largest-|entry| is positive so the basis is deterministic."""
    device = next(layer.parameters()).device
    d_in = layer.weight[0].numel()
    total = torch.zeros(d_in, dtype=torch.float64, device=device)
    outer = torch.zeros(d_in, d_in, dtype=torch.float64, device=device)
    n = 0
    for h in _pca_batches(model, layer, train_x):
        h = h.double()
        total += h.sum(0)
        outer += h.T @ h
        n += h.shape[0]
    mean = total / n
    cov = outer / n - torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh(cov)
    vectors = vectors.flip(-1)  # eigh sorts ascending
    peak = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))
    return (vectors * torch.where(peak >= 0, 1.0, -1.0).double()).float()


def _dct_basis(image: tuple[int, int, int]) -> torch.Tensor:
    """U with x U = the per-plane orthonormal dctn of the flattened C×H×W image x."""
    c, h, w = image
    plane = torch.kron(dct_matrix(h), dct_matrix(w))  # dctn of a row-major flattened plane
    return torch.block_diag(*[plane.T] * c).float()


class Bottleneck(BlockDictionary):
    kind = "bottleneck"
    variant_attr = "basis"
    FIELDS = {
        "layer": LAYER,
        "basis": one_of("identity", "dct", "random", "pca"),
        "seed": SEED,
        "scope": SCOPE,
    }
    LABEL = "bottleneck-{basis}"
    TENSOR_ALIGNED = True

    @classmethod
    def input_columns_layer(cls, spec: dict) -> str | None:
        return spec["layer"]

    @classmethod
    def maps_input_pixels(cls, spec: dict) -> bool:
        return spec.get("basis") in ("identity", "dct")  # kept coordinates / kept frequencies

    @property
    def groups_are_inputs(self) -> bool:
        return self.basis == "identity"

    @property
    def varies_with_init(self) -> bool:
        return self.basis == "pca" and not self.is_input_layer

    def export_plan(self, net, coeffs, mask, factorize, fold_previous):
        """Drop inputs (identity) or factor the layer into U_kept·C_kept: ``export_layers.plan_bottleneck``."""
        from glth_core.export_layers import plan_bottleneck

        return plan_bottleneck(net, self, coeffs, mask, factorize, fold_previous)

    @classmethod
    def fitted_to_init(cls, opts: dict) -> bool:
        return opts["basis"] == "pca"  # the layer's inputs depend on the layers before it

    SCOPE_DEFAULTS_TO_ALL = False

    @classmethod
    def scope_of(cls, opts: dict, model: nn.Module) -> tuple[ScopeEntry, ...]:
        layer = layer_of(model, opts["layer"])
        return (ScopeEntry(f"{opts['layer']}.weight", tuple(layer.weight.shape), 0),)

    @classmethod
    def check(cls, opts: dict, model: nn.Module) -> tuple[nn.Linear | nn.Conv2d, tuple | None]:
        """(the layer, the model's C×H×W input shape or None) after checking the spec against the model."""
        name = opts["layer"]
        layer = layer_of(model, name)
        weight = f"{name}.weight"
        if opts["scope"] is not None and opts["scope"] != [weight]:
            raise DictionarySpecError(
                f"dictionary.scope: a bottleneck's scope is its layer's weight, {[weight]!r}; leave it out"
            )
        image = getattr(model, "input_shape", None)
        image = tuple(image) if image is not None else None
        if opts["basis"] == "dct" and isinstance(layer, nn.Linear):
            pixels = None if image is None or len(image) != 3 else image[0] * image[1] * image[2]
            if pixels != layer.in_features:
                raise DictionarySpecError(
                    f"dictionary.basis: dct needs an image input of C×H×W = d_in; layer {name!r} has "
                    f"d_in = {layer.in_features} but the model's input_shape is {image}"
                )
        return layer, image

    @classmethod
    def build(cls, opts: dict, model: nn.Module, train_x: torch.Tensor | None = None) -> "Bottleneck":
        layer, image = cls.check(opts, model)
        conv = isinstance(layer, nn.Conv2d)
        shape = tuple(layer.weight.shape)
        d_out, d_in = shape[0], layer.weight[0].numel()
        kernel = shape[1:] if conv else None  # C_in × kh × kw: the "image" one filter sees
        basis = opts["basis"]
        if basis == "identity":
            op = IdentityRows()
        elif basis == "dct":
            op = DCTRows(plane=kernel[1:] if conv else image[1:])
        elif basis == "random":
            op = MatrixRows(haar(d_in, opts["seed"]).unsqueeze(0))
        else:
            if train_x is None:
                raise DictionarySpecError(
                    f"dictionary.basis: pca needs the training inputs (train_x) to see layer {opts['layer']!r}'s inputs"
                )
            op = MatrixRows(_pca_basis(model, layer, train_x).unsqueeze(0))
        d = cls((ScopeEntry(f"{opts['layer']}.weight", shape, 0),), [Segment(0, d_out, d_in, op)])
        d.layer, d.basis, d.d_in, d.d_out, d.image = opts["layer"], basis, d_in, d_out, image
        d.is_conv, d.kernel = conv, kernel
        d.op = op
        d.groups = torch.arange(d_in).repeat(d_out)
        d.is_input_layer = cls._is_input_layer(model, layer, image)
        return d

    @classmethod
    def transforms_inputs(cls, opts: dict, model: nn.Module) -> bool:
        return cls._is_input_layer(model, *cls.check(opts, model))

    @classmethod
    def _is_input_layer(cls, model: nn.Module, layer: nn.Module, image: tuple | None) -> bool:
        return not isinstance(layer, nn.Conv2d) and image is not None and cls._sees_flat_input(model, layer, image)

    @staticmethod
    def _sees_flat_input(model: nn.Module, layer: nn.Module, image: tuple) -> bool:
        """True when only Flatten (or Identity) modules run before ``layer`` and it receives
        exactly the flattened input; the trainer then transforms the dataset once instead."""
        device = next(layer.parameters()).device
        x = torch.randn(2, *image, device=device)
        called: list = []
        try:
            seen = _layer_input(model, layer, x, called)
        except DictionarySpecError:
            return False
        only_flatten = all(isinstance(m, (nn.Flatten, nn.Identity)) for m in called)
        return only_flatten and torch.equal(seen, x.flatten(1))

    @property
    def U(self) -> torch.Tensor:
        """The shared orthogonal basis, d_in × d_in float32 (built on demand for identity and dct)."""
        if isinstance(self.op, MatrixRows):
            return self.op.q[0]
        device = self.groups.device
        if self.basis == "identity":
            return torch.eye(self.d_in, device=device)
        return _dct_basis(self.kernel if self.is_conv else self.image).to(device)

    def transform_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """flatten(x) @ U for inputs N×C×H×W or N×d (FFT DCT for dct, no matmul for identity):
        the layer with weight C on these equals the layer with weight C Uᵀ on x."""
        return self.op.analyze(x.flatten(1) if x.dim() > 2 else x)

    @property
    def group_order(self) -> torch.Tensor | None:
        """The groups (columns of U) by importance fixed before any training, the first most
        important: dct by frequency index u + v (per plane, ties by column index: the lowest
        spatial frequencies of every channel first), pca by decreasing eigenvalue (column order);
        None for identity and random bases, which order nothing. Read-only, for the structured
        control (``glth_core.pruning``)."""
        if self.basis == "pca":
            return torch.arange(self.d_in)
        if self.basis != "dct":
            return None
        c, h, w = self.kernel if self.is_conv else self.image
        column = torch.arange(c * h * w)
        frequency = (column % (h * w)) // w + column % w
        return torch.sort(frequency, stable=True).indices
