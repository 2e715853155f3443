"""What every round-by-round runner shares: the IMP ``Trajectory`` and the strong-ticket
``StrongSearch`` both run their remaining rounds the same way and leave each finished round's
ticket behind in dictionary coefficients, which becomes a network by W = D a."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from glth_core.ticket import Ticket


class RoundRunner:
    """A mixin for runners with ``done``, ``run_round() -> record``, ``state.records``,
    ``ticket`` (the last finished round's) and ``dictionary``."""

    def run(self, on_round: Callable[[dict, "RoundRunner"], None] | None = None) -> list[dict]:
        """All remaining rounds; ``on_round(record, self)`` after each. Returns every record."""
        while not self.done:
            record = self.run_round()
            if on_round is not None:
                on_round(record, self)
        return self.state.records

    def network_params(self, ticket: Ticket) -> dict[str, torch.Tensor]:
        """A ticket's full parameter dict in the model's own coordinates (W = D a, with a the
        ticket's masked coefficients)."""
        w = ticket.weights()
        return {**w.free, **self.dictionary.unflatten(self.dictionary.synthesize(w.coeffs))}

    def scope_weights(self) -> dict[str, torch.Tensor]:
        """The parameters of the last finished round's network."""
        return self.network_params(self.ticket)
