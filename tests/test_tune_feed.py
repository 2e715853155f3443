"""The driver's feed of Tune trials (``orchestrator.tune_feed``), wrapped as ``tune.run`` wraps a
searcher given with ``max_concurrent_trials``: Tune's own ``SearchGenerator`` and
``ConcurrencyLimiter``, no Ray needed to make trials."""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

from ray.tune.experiment import Experiment, Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from orchestrator import spec as specs
from orchestrator.tune_feed import LiveFIFO, TrialFeed, grid_entries, trial_name
from orchestrator.tune_trial import TrialCarry

SPEC = """
name: feed
dataset: digits
model: mlp_300_100
dictionary: [{kind: canonical}, {kind: bottleneck, layer: "1", basis: identity}]
seeds: [0, 1, 2]
rounds: 2
batch_seeds: BATCH
"""


def trainable(config):
    pass


def drain(entries: list[dict], max_concurrent: int, where) -> tuple[list, int]:
    """Every Tune trial the feed makes, completing the oldest live one whenever Tune gets none;
    and the most trials live at once."""
    gen = SearchGenerator(ConcurrencyLimiter(TrialFeed(entries), max_concurrent=max_concurrent))
    sweep_cfg = {"sweep_id": "s", "threads": 1}
    gen.add_configurations(
        Experiment(
            "feed",
            trainable,
            config={"sweep": sweep_cfg},
            storage_path=str(where),
            num_samples=len(entries),
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        )
    )
    made, live, most = [], [], 0
    while not gen.is_finished():
        trial = gen.next_trial()
        if trial is None:
            assert live, "the feed gave no trial while none was live"
            gen.on_trial_complete(live.pop(0).trial_id)
            continue
        assert trial.config["sweep"] == sweep_cfg
        made.append(trial)
        live.append(trial)
        most = max(most, len(live))
    return made, most


def test_the_feed_hands_tune_every_entry_once_in_order_named_by_its_trial_id(tmp_path):
    for batch in (1, 2):
        sweep = specs.parse(SPEC.replace("BATCH", str(batch)))
        entries = grid_entries(sweep.trials, sweep.spec.batch_seeds)
        assert len(entries) == (6 if batch == 1 else 4)
        before = copy.deepcopy(entries)
        made, most = drain(entries, max_concurrent=2, where=tmp_path)
        ids = [e["trial_id"] for e in entries]
        assert [t.config["trial"] for t in made] == before  # the entries themselves, unchanged, in order
        assert [str(t) for t in made] == ids  # Tune's trial name …
        assert [t.custom_dirname for t in made] == ids  # … and its directory: the trial id
        assert [TrialCarry.from_dict(t.config["trial"]).trial_id for t in made] == ids
        assert most == 2
        assert entries == before  # Tune's copies never write back into the sweep's entries


def test_the_feeds_checkpoint_is_its_index_not_its_entries(tmp_path):
    entries = [{"trial_id": f"t{i}", "members": [{"trial_id": f"t{i}", "kind": "imp", "config": {}}]} for i in range(3)]
    feed = TrialFeed(entries)
    assert [feed.suggest(str(i)) for i in range(4)] == [{"trial": e} for e in entries] + [TrialFeed.FINISHED]
    feed.save(str(tmp_path / "feed.json"))
    assert (tmp_path / "feed.json").read_text() == '{"handed": 3}'
    again = TrialFeed(entries)
    again.restore(str(tmp_path / "feed.json"))
    assert again.suggest("x") == TrialFeed.FINISHED


def test_live_fifo_chooses_as_tunes_fifo_does_from_the_live_trials_only(tmp_path):
    """Tune's own list of trials and live set, kept as ``TuneController`` keeps them (a trial added
    at the end; a retried one moved to the end and added again; a finished one leaves the live
    set): at every step ``LiveFIFO`` picks the trial ``FIFOScheduler`` picks."""
    entries = grid_entries(specs.parse(SPEC.replace("BATCH", "1")).trials, 1)
    made, _ = drain(entries, max_concurrent=len(entries), where=tmp_path)
    rng = random.Random(0)
    trials, live, ours, chosen, compared = [], set(), LiveFIFO(), [], 0
    ctl = SimpleNamespace(get_trials=lambda: trials, get_live_trials=lambda: live)
    for step in range(200):
        if made and (not live or rng.random() < 0.1):
            trial = made.pop(0)
            trials.append(trial)
            live.add(trial)
            ours.on_trial_add(ctl, trial)
        if not live:
            continue
        trial = rng.choice(sorted(live, key=trials.index))  # a finished trial stays finished
        statuses = [Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR, "retry"]
        status = rng.choices(statuses, weights=[4, 4, 2, 0.2, 0.2, 2])[0]
        if status == "retry":  # TuneController._requeue_trial
            ours.on_trial_error(ctl, trial)
            trial.set_status(Trial.PENDING)
            trials.remove(trial)
            trials.append(trial)
            live.add(trial)
            ours.on_trial_add(ctl, trial)
        else:
            trial.set_status(status)
            if status in (Trial.TERMINATED, Trial.ERROR):
                live.discard(trial)
                ours.on_trial_complete(ctl, trial, {})
            else:
                live.add(trial)
        expected = FIFOScheduler().choose_trial_to_run(ctl)
        assert ours.choose_trial_to_run(ctl) is expected, step
        chosen.append(expected)
        compared += 1
    # the seeded walk compared 171 steps, met both answers and chose 5 of the 6 trials at some step
    assert (compared, len({id(t) for t in chosen if t is not None}), chosen.count(None)) == (171, 5, 26)
