"""glth's IMP equals plain PyTorch: a masked ``nn.Module`` trained by ``torch.optim`` on the same
batches, pruned by the same rule and rewound to the same initialization, round after round.

The plain side is written here from scratch (its own modules, masks, batch order, pruning and
evaluation); of glth it reads only the trajectory's results: each round's ticket, its record and
the mask it chooses next. The batch order is the one glth documents: round t of seed s draws a
fresh permutation per epoch from a generator seeded s·1,000,003 + 101·t, cut into batches in order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glth_core import data as datasets
from glth_core.imp import Trajectory
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

SEED, TAU, ROUNDS = 3, 0.3, 3
STEPS, BATCH = 15, 128  # digits' 1,293 training images: 11 batches an epoch, so a round crosses an epoch
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
    "adam": {"optimizer": "adam", "lr": 2e-3, "weight_decay": 5e-3},
}
BOTTLENECK = {"kind": "bottleneck", "layer": "1", "basis": "identity"}


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


class PlainMLP(nn.Module):
    """Flatten, 64→300→100→10 with ReLU; every parameter masked in the forward (canonical IMP)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 300), nn.Linear(300, 100), nn.Linear(100, 10)
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.named_parameters()}

    def forward(self, x):
        p = {n: v * self.masks[n] for n, v in self.named_parameters()}
        h = F.relu(F.linear(x.flatten(1), p["fc1.weight"], p["fc1.bias"]))
        h = F.relu(F.linear(h, p["fc2.weight"], p["fc2.bias"]))
        return F.linear(h, p["fc3.weight"], p["fc3.bias"])

    def pruned(self) -> dict[str, torch.Tensor]:
        """The weights under the mask, by glth's names (layer indices of its nn.Sequential)."""
        glth_name = {"fc1": "1", "fc2": "3", "fc3": "5"}
        return {
            f"{glth_name[n.split('.')[0]]}.{n.split('.')[1]}": (v * self.masks[n]).detach()
            for n, v in self.named_parameters()
        }

    def next_masks(self) -> None:
        """Global magnitude pruning over every parameter: drop round(τ·n) of the n survivors with
        the smallest |w|, ties to the lower index (parameters flattened and concatenated in order)."""
        names = [n for n, _ in self.named_parameters()]
        w = torch.cat([(v * self.masks[n]).detach().abs().flatten() for n, v in self.named_parameters()])
        alive = torch.cat([self.masks[n].flatten() for n in names])
        survivors = alive.nonzero().flatten()  # ascending index, so a stable sort breaks ties by index
        by_size = survivors[torch.sort(w[survivors], stable=True).indices]
        alive[by_size[: round(TAU * len(by_size))]] = False
        for n, piece in zip(names, alive.split([self.masks[n].numel() for n in names])):
            self.masks[n] = piece.view_as(self.masks[n]).clone()


class PlainFactorized(PlainMLP):
    """The same MLP with its first layer factorized, W = C·Uᵀ with U = identity: the parameter is
    C (300 × 64); IMP prunes whole columns of C (input features), nothing else."""

    def __init__(self):
        super().__init__()
        self.register_buffer("U", torch.eye(64))
        self.column_mask = torch.ones(64, dtype=torch.bool)

    @property
    def C(self) -> nn.Parameter:
        """The coefficient matrix, C = W·U (= W at U = I): the first Linear's weight is the parameter."""
        return self.fc1.weight

    def forward(self, x):
        C = self.C * self.column_mask
        h = F.relu((x.flatten(1) @ self.U) @ C.T + self.fc1.bias)
        h = F.relu(F.linear(h, self.fc2.weight, self.fc2.bias))
        return F.linear(h, self.fc3.weight, self.fc3.bias)

    def pruned(self) -> dict[str, torch.Tensor]:
        out = {n: v.detach() for n, v in super().pruned().items()}
        out["1.weight"] = (self.C * self.column_mask).detach() @ self.U.T
        return out

    def next_masks(self) -> None:
        """Drop round(τ·m) of the m surviving columns of C with the least energy Σ_k C_kℓ², ties to
        the lower index."""
        energy = (self.C.detach() * self.column_mask).pow(2).sum(0)
        survivors = self.column_mask.nonzero().flatten().tolist()
        by_energy = sorted(survivors, key=lambda j: (energy[j].item(), j))
        self.column_mask = self.column_mask.clone()
        self.column_mask[by_energy[: round(TAU * len(by_energy))]] = False

    def mask_vector(self) -> torch.Tensor:
        return self.column_mask.repeat(300)  # element k·64 + ℓ: unit k's coefficient on column ℓ


def batches(n: int, round_index: int):
    """Round ``round_index``'s training batches: a fresh permutation an epoch, cut in order."""
    generator = torch.Generator().manual_seed(SEED * 1_000_003 + round_index * 101)
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(BATCH)


def train_plain(net: PlainMLP, init: dict, x, y, optimizer: dict, round_index: int) -> None:
    """Rewind to ``init`` under the masks, then STEPS steps of torch.optim on the round's batches."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(init[n] * net.masks[n])
        if isinstance(net, PlainFactorized):
            net.C.mul_(net.column_mask)
    opts = {k: v for k, v in optimizer.items() if k != "optimizer"}
    opt = (torch.optim.Adam if optimizer["optimizer"] == "adam" else torch.optim.SGD)(net.parameters(), **opts)
    order = batches(x.shape[0], round_index)
    for _ in range(STEPS):
        idx = next(order)
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dictionary", ["canonical", "bottleneck"])
def test_imp_equals_a_plain_masked_module_trained_by_torch_optim(digits, optimizer, dictionary):
    spec = {"kind": "canonical"} if dictionary == "canonical" else BOTTLENECK
    cfg = TrajectoryConfig(
        dataset="digits",
        model="mlp_300_100",
        dictionary=spec,
        tau=TAU,
        rounds=ROUNDS,
        seed=SEED,
        rewind="init",
        train=TrainConfig(steps=STEPS, batch_size=BATCH, **OPTIMIZERS[optimizer]),
    )
    traj = Trajectory(cfg, data=digits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # glth's rule for a trajectory's initialization: the seed, then the model
        net = PlainMLP() if dictionary == "canonical" else PlainFactorized()
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    start = {**traj.state.init.free, **traj.dictionary.unflatten(traj.dictionary.synthesize(traj.state.init.coeffs))}
    assert all(torch.equal(start[n], v) for n, v in net.pruned().items())  # the same model, the same init

    for t in range(ROUNDS):
        record = traj.run_round()
        train_plain(net, init, digits.train_x, digits.train_y, OPTIMIZERS[optimizer], t)
        ours, theirs = traj.scope_weights(), net.pruned()
        assert ours.keys() == theirs.keys()
        for name in theirs:
            assert torch.allclose(ours[name], theirs[name], rtol=0, atol=1e-6), (
                f"round {t}, {name}: max |glth − plain| = {(ours[name] - theirs[name]).abs().max():.3g}"
            )
        with torch.no_grad():
            logits = net(digits.test_x)
        assert record["test_accuracy"] * len(digits.test_y) == pytest.approx(
            int((logits.argmax(1) == digits.test_y).sum())
        )
        assert record["test_loss"] == pytest.approx(F.cross_entropy(logits, digits.test_y).item(), abs=1e-5)
        if t + 1 < ROUNDS:
            net.next_masks()
            plain_mask = (
                torch.cat([m.flatten() for m in net.masks.values()]) if dictionary == "canonical" else net.mask_vector()
            )
            assert torch.equal(traj.state.mask, plain_mask), f"round {t + 1}'s mask"
    assert traj.done and int(traj.state.mask.sum()) < traj.dictionary.size  # it pruned, and twice
