"""The bottleneck dictionary (paper §3): on one nn.Linear, every unit's incoming weights are
coefficients over one shared orthogonal U (d_in × d_in): W = C Uᵀ, i.e. row w_k = U c_k.

The scope is that layer's weight alone. Element k·d_in + ℓ is unit k's coefficient on column
ℓ of U, and the group of every element is ℓ: IMP removes column ℓ of U from all units at
once, so the pruned layer factors as (x U_kept) C_keptᵀ, a rank-m bottleneck.

``basis``: identity (U = I: pruning ignores inputs), dct (U's columns are 2-D DCT basis
images, one orthonormal DCT per input channel plane: x U = per-plane dctn(x)), random (seeded
Haar) or pca (eigenvectors of the covariance of the layer's inputs over the training set,
largest variance first).
"""

from __future__ import annotations

import torch
from torch import nn

from glth_core.dictionaries.base import DictionarySpecError, ScopeEntry
from glth_core.dictionaries.blocks import BlockDictionary, Segment
from glth_core.dictionaries.spec import LAYER, SCOPE, SEED, one_of
from glth_core.dictionaries.transforms import DCTRows, IdentityRows, MatrixRows, dct_matrix, haar

PCA_BATCH = 4096


class _Stop(Exception):
    """Raised by a hook to skip the rest of a forward pass once the layer's input is seen."""


def _layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor, called: list | None = None) -> torch.Tensor:
    """What ``layer`` receives when ``model`` runs on ``x``, as rows of d_in features (the
    forward stops there; modules are in eval mode meanwhile so BatchNorm statistics stay put).
    ``called`` collects the leaf modules that ran before ``layer``."""
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
    return seen[0].reshape(-1, seen[0].shape[-1])


def _pca_basis(model: nn.Module, layer: nn.Module, train_x: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the covariance of the layer's inputs, by decreasing eigenvalue (float64
    eigh); each column's largest-|entry| is positive so the basis is deterministic."""
    device = next(layer.parameters()).device
    d_in = layer.in_features
    total = torch.zeros(d_in, dtype=torch.float64, device=device)
    outer = torch.zeros(d_in, d_in, dtype=torch.float64, device=device)
    n = 0
    for start in range(0, train_x.shape[0], PCA_BATCH):
        h = _layer_input(model, layer, train_x[start : start + PCA_BATCH].to(device)).double()
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

    @classmethod
    def draws_seed(cls, opts: dict) -> bool:
        return opts["basis"] == "random"

    @classmethod
    def fitted_to_init(cls, opts: dict) -> bool:
        return opts["basis"] == "pca"  # the layer's inputs depend on the layers before it

    @classmethod
    def check(cls, opts: dict, model: nn.Module) -> tuple[nn.Linear, tuple | None]:
        """(the layer, the model's C×H×W input shape or None) after checking the spec against the model."""
        name = opts["layer"]
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        layer = dict(model.named_modules()).get(name)
        if not isinstance(layer, nn.Linear):
            what = "is not in the model" if layer is None else f"is a {type(layer).__name__}, not an nn.Linear"
            raise DictionarySpecError(f"dictionary.layer: {name!r} {what}; Linear layers: {', '.join(linears) or 'none'}")
        weight = f"{name}.weight"
        if opts["scope"] is not None and opts["scope"] != [weight]:
            raise DictionarySpecError(f"dictionary.scope: a bottleneck's scope is its layer's weight, {[weight]!r}; leave it out")
        image = getattr(model, "input_shape", None)
        image = tuple(image) if image is not None else None
        if opts["basis"] == "dct":
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
        d_out, d_in = layer.weight.shape
        basis = opts["basis"]
        if basis == "identity":
            op = IdentityRows()
        elif basis == "dct":
            op = DCTRows(plane=image[1:])
        elif basis == "random":
            op = MatrixRows(haar(d_in, opts["seed"]).unsqueeze(0))
        else:
            if train_x is None:
                raise DictionarySpecError(f"dictionary.basis: pca needs the training inputs (train_x) to see layer {opts['layer']!r}'s inputs")
            op = MatrixRows(_pca_basis(model, layer, train_x).unsqueeze(0))
        d = cls((ScopeEntry(f"{opts['layer']}.weight", (d_out, d_in), 0),), [Segment(0, d_out, d_in, op)])
        d.layer, d.basis, d.d_in, d.d_out, d.image = opts["layer"], basis, d_in, d_out, image
        d.op = op
        d.groups = torch.arange(d_in).repeat(d_out)
        d.is_input_layer = image is not None and cls._sees_flat_input(model, layer, image)
        return d

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
        return _dct_basis(self.image).to(device)

    def transform_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """flatten(x) @ U for inputs N×C×H×W or N×d (FFT DCT for dct, no matmul for identity):
        the layer with weight C on these equals the layer with weight C Uᵀ on x."""
        return self.op.analyze(x.flatten(1) if x.dim() > 2 else x)
