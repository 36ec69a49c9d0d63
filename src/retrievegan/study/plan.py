"""Participant ids and per-participant trial plans.

A plan is a pure function of the bundle, the study seed and the participant id: its seed is derived
as ``sha256(study seed, participant id)`` (stored with the plan and with every response), and
``numpy.random.default_rng(seed)`` draws, for that participant:

* per method pair, ``trials_per_pair`` scene graphs (without replacement; scene graphs not yet used
  by another pair of the same participant first, so a participant rarely sees a scene graph twice);
* ``catch_trials`` catch items (scene graphs not used by the pair trials first);
* left/right positions, balanced per pair: the reference is on the left in half of a pair's trials
  (the odd one drawn), so method preference and side preference are not confounded;
* the order of all trials (pairs and catch trials interleaved).

The app saves the plan in the database before the participant's first trial and serves the stored
plan afterwards, so a later change of this code never reshuffles a participant mid-study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from typing import Any, Literal

import numpy as np

from retrievegan.study.pool import CATCH_FOIL, CATCH_REAL, Bundle

PARTICIPANT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SIDES = ("left", "right")


def validate_participant_id(raw: object) -> str | None:
    """``raw`` if it is 1..64 characters of ``[A-Za-z0-9_-]`` (Prolific ids are 24 hex digits), else None."""
    if not isinstance(raw, str) or PARTICIPANT_ID_RE.fullmatch(raw) is None:
        return None
    return raw


def mint_participant_id() -> str:
    """A fresh random id for a visitor who arrived without one (OS randomness, not a seeded RNG)."""
    return "anon-" + secrets.token_hex(10)


def plan_seed(study_seed: int, participant_id: str) -> int:
    """The participant's plan seed: 63 bits of sha256(study seed, participant id)."""
    digest = hashlib.sha256(f"{study_seed}\x00{participant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclasses.dataclass(frozen=True)
class Trial:
    trial_id: str
    kind: Literal["pair", "catch"]
    image_id: int
    left_method: str
    right_method: str
    left_patches: tuple[int, ...]
    right_patches: tuple[int, ...]

    def method(self, side: str) -> str:
        if side == "left":
            return self.left_method
        if side == "right":
            return self.right_method
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "kind": self.kind,
            "image_id": self.image_id,
            "left_method": self.left_method,
            "right_method": self.right_method,
            "left_patches": list(self.left_patches),
            "right_patches": list(self.right_patches),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        return cls(
            str(data["trial_id"]),
            data["kind"],
            int(data["image_id"]),
            str(data["left_method"]),
            str(data["right_method"]),
            tuple(int(p) for p in data["left_patches"]),
            tuple(int(p) for p in data["right_patches"]),
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    participant_id: str
    study_id: str
    seed: int
    trials: tuple[Trial, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "study_id": self.study_id,
            "seed": self.seed,
            "trials": [t.to_json() for t in self.trials],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            str(data["participant_id"]),
            str(data["study_id"]),
            int(data["seed"]),
            tuple(Trial.from_json(t) for t in data["trials"]),
        )

    def trial(self, trial_id: str) -> Trial:
        for t in self.trials:
            if t.trial_id == trial_id:
                return t
        raise KeyError(trial_id)


def _balanced_sides(n: int, rng: np.random.Generator) -> np.ndarray:
    """n booleans (True: the first set goes left), half True, the odd one drawn, shuffled."""
    first_left = np.zeros(n, dtype=bool)
    first_left[: n // 2 + (int(rng.integers(2)) if n % 2 else 0)] = True
    return rng.permutation(first_left)


def _pick(candidates: list[Any], count: int, used: set[int], rng: np.random.Generator) -> list[Any]:
    """``count`` of ``candidates`` (each with .image_id) in random order, unused image ids first."""
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    fresh = [c for c in order if c.image_id not in used]
    reused = [c for c in order if c.image_id in used]
    chosen = (fresh + reused)[:count]
    used.update(c.image_id for c in chosen)
    return chosen


def make_plan(bundle: Bundle, participant_id: str) -> Plan:
    if validate_participant_id(participant_id) is None:
        raise ValueError("invalid participant id")
    seed = plan_seed(bundle.plan_seed, participant_id)
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    trials: list[Trial] = []
    for m in rng.permutation(len(bundle.methods)):
        other = bundle.methods[int(m)]
        items = _pick(list(bundle.pairs[other]), bundle.trials_per_pair, used, rng)
        for item, ref_left in zip(items, _balanced_sides(len(items), rng)):
            left, right = ((bundle.reference, item.reference), (other, item.other))[:: 1 if ref_left else -1]
            trials.append(
                Trial(
                    f"{other}:{item.image_id}",
                    "pair",
                    item.image_id,
                    left[0],
                    right[0],
                    tuple(left[1]),
                    tuple(right[1]),
                )
            )
    catch = _pick(list(bundle.catch), bundle.catch_trials, used, rng)
    for item, real_left in zip(catch, _balanced_sides(len(catch), rng)):
        left, right = ((CATCH_REAL, item.real), (CATCH_FOIL, item.foil))[:: 1 if real_left else -1]
        trials.append(
            Trial(f"catch:{item.image_id}", "catch", item.image_id, left[0], right[0], tuple(left[1]), tuple(right[1]))
        )
    order = rng.permutation(len(trials))
    return Plan(participant_id, bundle.study_id, seed, tuple(trials[int(i)] for i in order))
