"""Simulated participants for the embedded synthetic benchmark (never a substitute for people).

A simulated participant judges a patch set by its *coherence*: the number of its patches that share
the most common hidden theme (the synthetic benchmark paints every object of an image in one theme).
On each trial it picks the more coherent set, except with probability ``noise`` (a lapse) or on a
tie, when it answers at random, choosing the left set with probability ``0.5 + left_bias``. A share
``inattentive`` of participants answer every trial at random; the catch trials are there to find them.

They go through the same plan and storage code as people (``make_plan``, ``Store``), with
``id_source = "simulated"``, ids ``sim<NNNN>`` and the app version ``SIMULATED_APP_VERSION``, and
their responses are exported in the same CSV format. Their time stamps (``created_at``) come from a
``SimulatedClock`` that starts at ``SIMULATION_EPOCH`` and advances by each simulated response time, so the
exported files are the same bytes on every run. The expected preference of the attentive
participants is computed exactly from their plans (``truth``), so the analysis can be checked
against it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.data.patches import load_patch_table
from retrievegan.errors import InputError
from retrievegan.study.config import SimulationConfig
from retrievegan.study.plan import Plan, Trial, make_plan
from retrievegan.study.pool import Bundle, load_bundle
from retrievegan.study.store import Store

SIMULATED_APP_VERSION = "simulated"
SIMULATED_CONSENT = "simulated"
SIMULATION_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC)  # simulated time starts here


class SimulatedClock:
    """``Store(..., clock=SimulatedClock())``: simulated UTC time, moved on by ``advance`` only."""

    def __init__(self, start: _dt.datetime = SIMULATION_EPOCH):
        self.now = start

    def __call__(self) -> _dt.datetime:
        return self.now

    def advance(self, milliseconds: int) -> None:
        self.now += _dt.timedelta(milliseconds=milliseconds)


def patch_themes(patch_table: str | Path, bundle: Bundle) -> dict[int, int]:
    """Bank patch id -> hidden theme, for every patch of the bundle (synthetic benchmark only)."""
    table = load_patch_table(patch_table)
    themes = table.set_index("patch_id")["theme"]
    out = {}
    for patch_id in bundle.patch_rows:
        if patch_id not in themes.index or pd.isna(themes.loc[patch_id]):
            raise InputError(
                patch_table,
                "patch has no theme: simulated participants need the synthetic benchmark",
                f"patch_id {patch_id}",
            )
        out[patch_id] = int(themes.loc[patch_id])
    return out


def coherence(patch_ids: tuple[int, ...], themes: dict[int, int]) -> int:
    """How many patches of the set share its most common theme."""
    _, counts = np.unique([themes[p] for p in patch_ids], return_counts=True)
    return int(counts.max())


def choice_probability_left(trial: Trial, themes: dict[int, int], cfg: SimulationConfig, attentive: bool) -> float:
    """P(an attentive / inattentive simulated participant chooses the left set of ``trial``)."""
    random_left = 0.5 + cfg.left_bias
    if not attentive:
        return random_left
    left, right = coherence(trial.left_patches, themes), coherence(trial.right_patches, themes)
    judged = 1.0 if left > right else 0.0 if right > left else random_left
    return (1.0 - cfg.noise) * judged + cfg.noise * random_left


def simulate(
    bundle: Bundle, themes: dict[int, int], cfg: SimulationConfig, store: Store, clock: SimulatedClock | None = None
) -> pd.DataFrame:
    """Run ``cfg.participants`` simulated participants into ``store``; return who they were. ``clock``: the
    store's simulated clock, advanced by every simulated response time."""
    rows = []
    for index in range(cfg.participants):
        rng = np.random.default_rng([cfg.seed, index])
        participant_id = f"sim{index:04d}"
        attentive = bool(rng.random() >= cfg.inattentive)
        plan = store.save_plan(make_plan(bundle, participant_id), "simulated", SIMULATED_APP_VERSION)
        store.record_consent(participant_id, SIMULATED_CONSENT)
        for trial in plan.trials:
            p_left = choice_probability_left(trial, themes, cfg, attentive)
            side = "left" if rng.random() < p_left else "right"
            response_ms = int(rng.lognormal(np.log(2500.0), 0.5))
            if clock is not None:
                clock.advance(response_ms)
            store.record_response(plan, trial.trial_id, side, response_ms, SIMULATED_APP_VERSION, SIMULATED_CONSENT)
        rows.append({"participant_id": participant_id, "attentive": attentive, "plan_seed": plan.seed})
    return pd.DataFrame(rows)


def truth(
    bundle: Bundle, themes: dict[int, int], cfg: SimulationConfig, plans: list[Plan], attentive: dict[str, bool]
) -> pd.DataFrame:
    """Per simulated participant and pair: trials, and the expected number preferring the reference.

    Summed over the participants an analysis includes (``truth_shares``), this is the exact expected
    value of the preference share it estimates: exclusion looks only at catch trials, which are drawn
    independently of the pair trials.
    """
    rows = []
    for plan in plans:
        for other in bundle.methods:
            probs = []
            for trial in plan.trials:
                if trial.kind != "pair" or other not in (trial.left_method, trial.right_method):
                    continue
                p_left = choice_probability_left(trial, themes, cfg, attentive[plan.participant_id])
                probs.append(p_left if trial.left_method == bundle.reference else 1.0 - p_left)
            rows.append(
                {
                    "participant_id": plan.participant_id,
                    "attentive": attentive[plan.participant_id],
                    "reference": bundle.reference,
                    "other": other,
                    "n_trials": len(probs),
                    "expected_prefer_reference": float(np.sum(probs)),
                }
            )
    return pd.DataFrame(rows)


def truth_shares(expected: pd.DataFrame, participants: list[str] | None = None) -> pd.Series:
    """other method -> expected share preferring the reference over ``participants`` (default: all)."""
    if participants is not None:
        expected = expected[expected["participant_id"].isin(participants)]
    sums = expected.groupby("other")[["expected_prefer_reference", "n_trials"]].sum()
    return (sums["expected_prefer_reference"] / sums["n_trials"]).rename("true_share_simulated")


@dataclasses.dataclass(frozen=True)
class SimulatedStudy:
    """One simulated population of a bundle (every table labelled ``population = simulated``)."""

    people: pd.DataFrame  # participant_id, attentive, plan_seed
    responses: pd.DataFrame  # exported responses, ``population`` first
    expected: pd.DataFrame  # ``truth`` per participant and pair, ``population`` last


def simulate_study(study_dir: str | Path, patch_table: str | Path, cfg: SimulationConfig) -> SimulatedStudy:
    """``cfg.participants`` simulated participants through a throwaway SQLite store on simulated time (the same
    responses on every run), with their exact expected preferences."""
    bundle = load_bundle(study_dir)
    themes = patch_themes(patch_table, bundle)
    with tempfile.TemporaryDirectory(prefix="study-sim-") as tmp:
        clock = SimulatedClock()  # created_at: simulated time, the same on every run
        store = Store(f"sqlite:///{Path(tmp) / 'simulated.sqlite'}", create=True, clock=clock)
        try:
            people = simulate(bundle, themes, cfg, store, clock)
            responses = store.export_responses()
            plans = [store.get_plan(p) for p in people["participant_id"]]
        finally:
            store.dispose()
    attentive = dict(zip(people["participant_id"], people["attentive"]))
    expected = truth(bundle, themes, cfg, [p for p in plans if p is not None], attentive)
    responses.insert(0, "population", "simulated")
    return SimulatedStudy(people, responses, expected.assign(population="simulated"))


def write_simulated_study(
    study_dir: str | Path,
    patch_table: str | Path,
    cfg: SimulationConfig,
    responses_csv: str | Path,
    truth_csv: str | Path,
) -> SimulatedStudy:
    """:func:`simulate_study`, its responses written to ``responses_csv`` and its expected preferences to
    ``truth_csv``."""
    study = simulate_study(study_dir, patch_table, cfg)
    io.write_text(responses_csv, study.responses.to_csv(index=False))
    io.write_text(truth_csv, study.expected.to_csv(index=False, float_format="%.6g"))
    return study
