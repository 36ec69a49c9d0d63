"""The ``userstudy`` config section: plan design, simulated participants, analysis.

Frozen dataclasses built with ``retrievegan.config.from_json`` / ``from_mapping`` (unknown keys are
errors). The paper says only that two methods' patch sets were shown for one scene graph with the
question "which set of patches are more mutually compatible and more likely to coexist in the same
image?"; every number below is *ours*.
"""

from __future__ import annotations

import dataclasses

from retrievegan.errors import ConfigError
from retrievegan.study import dburl

# Method names of docs/architecture.md; the figure labels follow the paper's wording.
METHOD_LABELS = {
    "retrievegan": "RetrieveGAN",
    "pastegan": "PasteGAN",
    "sg2im": "sg2im",
    "layout2im": "layout2im",
    "attngan": "AttnGAN",
    "retrievegan_occur_only": "w/o L_gt_sel",
    "retrievegan_gt_only": "w/o L_occur_sel",
    "retrievegan_no_gt_no_occur": "w/o L_gt_sel, L_occur_sel",
}

POPULATIONS = ("participants", "simulated")


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What one participant sees (ours; the paper gives no trial counts)."""

    seed: int = 0  # study seed: per-participant plan seeds are derived from it and the participant id
    trials_per_pair: int = 8  # scene graphs per (reference, other method) pair and participant
    catch_trials: int = 4  # real-image set vs. set from unrelated images, per participant
    catch_pool: int = 64  # test images drawn (once, from the seed) as candidates for catch trials
    min_response_ms: int = 300  # a click sooner than this after a trial appears is ignored (double clicks)

    def __post_init__(self) -> None:
        if self.trials_per_pair < 1:
            raise ValueError("trials_per_pair must be >= 1")
        if self.catch_trials < 0 or self.catch_pool < self.catch_trials:
            raise ValueError("need 0 <= catch_trials <= catch_pool")
        if self.min_response_ms < 0:
            raise ValueError("min_response_ms must be >= 0")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Simulated participants (embedded benchmark only): prefer the set with more patches of one theme."""

    enabled: bool = False
    participants: int = 60
    noise: float = 0.2  # lapse rate: share of trials answered at random
    left_bias: float = 0.0  # a random answer picks the left set with probability 0.5 + left_bias
    inattentive: float = 0.1  # share of participants answering every trial at random (catch trials find them)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.participants < 1:
            raise ValueError("participants must be >= 1")
        if not 0.0 <= self.noise <= 1.0 or not 0.0 <= self.inattentive <= 1.0:
            raise ValueError("noise and inattentive must lie in [0, 1]")
        if not -0.5 <= self.left_bias <= 0.5:
            raise ValueError("left_bias must lie in [-0.5, 0.5]")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    confidence: float = 0.95  # Wilson and bootstrap intervals
    bootstrap: int = 2000  # resamples of participants
    seed: int = 0  # bootstrap RNG
    alpha: float = 0.05  # family-wise level of the Holm correction across pairs
    max_catch_failure_rate: float = 0.25  # exclusion: more catch failures than this share -> excluded
    require_complete: bool = True  # exclusion: participants who did not answer every planned trial

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("confidence must lie in (0.5, 1)")
        if self.bootstrap < 100:
            raise ValueError("bootstrap must be >= 100")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must lie in (0, 1)")
        if not 0.0 <= self.max_catch_failure_rate <= 1.0:
            raise ValueError("max_catch_failure_rate must lie in [0, 1]")


@dataclasses.dataclass(frozen=True)
class AccessConfig:
    """Who may take part (ours): see ``retrievegan.study.access``. Not part of the study id."""

    signed_links: bool = False  # links must carry sig = HMAC(link_secret, participant id) (`retrievegan study-links`)
    prolific_only: bool = False  # only PROLIFIC_PID of 24 hex digits; no pid links, no minted ids


@dataclasses.dataclass(frozen=True)
class UserStudyConfig:
    reference: str = "retrievegan"
    methods: tuple[str, ...] = (
        "pastegan",
        "retrievegan_occur_only",
        "retrievegan_gt_only",
        "retrievegan_no_gt_no_occur",
    )
    setting: str = "pred_bbox"
    # None: sqlite:///<repo>/userstudy/data/responses-<dataset>.sqlite; never with a password (study.dburl)
    database_url: str | None = None
    plan: PlanConfig = PlanConfig()
    access: AccessConfig = AccessConfig()
    simulate: SimulationConfig = SimulationConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods must name at least one method compared with the reference")
        if self.reference in self.methods:
            raise ValueError(f"the reference {self.reference!r} cannot also be a compared method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("duplicate names in methods")
        for name in (self.reference, *self.methods):
            if name.startswith("catch_"):
                raise ConfigError(f"method name {name!r}: the prefix catch_ is reserved for catch trials")
        # refused when the config is read: before the workflow or a command writes any file
        dburl.refuse_password(self.database_url, "userstudy.database_url")
