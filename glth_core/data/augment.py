"""Data augmentation of training batches (``train.augment``), on the batch's device, reproducible.

``crop_flip`` is CIFAR's standard augmentation (He et al. 2016; open_lth's ``RandomCrop(32,
padding=4)`` + ``RandomHorizontalFlip``): each image is zero-padded by 4 pixels on every side, a
random H×W window of the padded image is kept (so the image keeps its size), and the result is
mirrored left–right with probability ½. It needs image inputs C×H×W; "zero" is a black pixel of
the raw image, so in the stored (normalized) tensors the padding is each channel's
``-mean / std`` (``Augment.fill``).

Reproducibility: the random draws of step ``s`` of a training come from a generator seeded with a
hash of (the data-order generator's seed, ``s``). The data order of a round is a function of
``round_generator(seed, round)`` alone (``glth_core.train.batch_indices``), so the augmented batch
of every step is a function of (trial seed, round, step): a training started at step k (late
rewinding, learning-rate rewinding) or resumed from a saved state sees exactly the batches a run
from 0 sees there, and no generator state needs saving.

The whole batch is augmented at once: the offsets and flips of its images are drawn as tensors
(on the CPU, so the draws do not depend on the device), and every crop and flip is one gather.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

AUGMENTS = ("none", "crop_flip")
PAD = 4  # pixels of padding on each side: a crop's offset is 0…2·PAD in each direction


def check_augment(augment: str) -> None:
    if augment not in AUGMENTS:
        raise ValueError(f"train.augment: {augment!r} is not one of {', '.join(AUGMENTS)}")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of a step's augmentation draws: seeded with a hash of (``seed``, ``step``), so
    no two (data-order seed, step) pairs share their draws."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(step)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def draw_crop_flip(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row offsets, column offsets, flips) of ``n`` images: offsets uniform in 0…2·PAD, flips
    True with probability ½, all int64/bool CPU tensors of length ``n``."""
    offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    return offsets[0], offsets[1], flips


def pad(x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``x`` (N×C×H×W) with PAD pixels of each channel's ``fill`` on every side."""
    n, c, h, w = x.shape
    out = fill.to(x.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * PAD, w + 2 * PAD).clone()
    out[:, :, PAD : PAD + h, PAD : PAD + w] = x
    return out


def crop_flip(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flips: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """Image i of ``x`` padded (``pad``), cropped to H×W at (``rows[i]``, ``cols[i]``) and mirrored
    left–right where ``flips[i]``: one gather over the flattened padded images for the whole batch
    (a flip reverses the columns read). Faster on CPU than 4-D advanced indexing or unfold + index."""
    n, c, h, w = x.shape
    dev = x.device
    rows, cols, flips = rows.to(dev), cols.to(dev), flips.to(dev)
    r = rows.view(n, 1) + torch.arange(h, device=dev)  # n × h: padded rows each crop reads
    across = torch.arange(w, device=dev)
    k = cols.view(n, 1) + torch.where(flips.view(n, 1), across.flip(0), across)  # n × w: its columns, in order
    where = (r.view(n, h, 1) * (w + 2 * PAD) + k.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return pad(x, fill).view(n, c, -1).gather(2, where).view(n, c, h, w)


@dataclass(frozen=True)
class Augment:
    """One trial's augmentation: ``kind`` (an AUGMENTS name other than none) and the value a
    zero pixel has in the stored tensors, per channel (``fill``)."""

    kind: str
    fill: tuple[float, ...]

    def stream(self, generator: torch.Generator) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """(batch, step) → the augmented batch of that step of the data order ``generator`` draws
        (keyed by the generator's seed, whatever it has drawn since)."""
        seed = generator.initial_seed()
        fill = torch.tensor(self.fill)

        def apply(xb: torch.Tensor, step: int) -> torch.Tensor:
            return crop_flip(xb, *draw_crop_flip(xb.shape[0], step_generator(seed, step)), fill.to(xb.device))

        return apply


def batch_stream(augment: Augment | None, generator: torch.Generator) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``augment.stream(generator)``, or the batch unchanged when there is no augmentation."""
    return (lambda xb, step: xb) if augment is None else augment.stream(generator)


def augmenter(augment: str, data, input_transformed: bool = False) -> Augment | None:
    """The ``Augment`` of ``train.augment`` for a loaded ``glth_core.data.Dataset`` (None for none).
    ``input_transformed``: the trainer sees the inputs through an input-layer bottleneck (flat
    vectors x U), which crop_flip cannot apply to."""
    check_augment(augment)
    if augment == "none":
        return None
    check_images(augment, data.input_shape, data.is_image, input_transformed)
    black = (torch.zeros(len(data.mean)) - torch.tensor(data.mean)) / torch.tensor(data.std)  # as the data were mapped
    return Augment(augment, tuple(black.tolist()))


def check_images(augment: str, input_shape, is_image: bool = True, input_transformed: bool = False) -> None:
    """Refuse (one line) an augmentation on inputs that are not C×H×W images (``input_shape``
    None: not known here, only ``input_transformed`` is checked)."""
    if augment == "none":
        return
    why = None
    if not is_image or (input_shape is not None and len(tuple(input_shape)) != 3):
        why = f"the dataset's inputs are {'×'.join(map(str, input_shape or ())) or 'not known'}, not images"
    elif input_transformed:
        why = "an input-layer bottleneck dictionary trains on the transformed, flattened inputs"
    if why is not None:
        raise ValueError(f"train.augment: {augment} needs image inputs C×H×W; {why} (use augment: none)")
