"""The dictionary kinds a spec can name, by name, apart from the composite (which is built from
them, so it imports this registry; ``glth_core.dictionaries.KINDS`` adds it). Adding a kind is
one file plus one line here."""

from __future__ import annotations

from glth_core.dictionaries.blockdiag import BlockDiagonal
from glth_core.dictionaries.bottleneck import Bottleneck
from glth_core.dictionaries.canonical import Canonical
from glth_core.dictionaries.channels import Channels
from glth_core.dictionaries.random import RandomRotation

#: kind name → its class (the builder): FIELDS, LABEL, check(opts, model), build(opts, model, train_x);
#: every kind a composite's part may be
PART_KINDS: dict[str, type] = {
    "canonical": Canonical,
    "random": RandomRotation,
    "blockdiag": BlockDiagonal,
    "bottleneck": Bottleneck,
    "channels": Channels,
}
