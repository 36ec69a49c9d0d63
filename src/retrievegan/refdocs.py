"""The stored reference outputs of the opt-in runs (``docs/claims_reference*``, ``docs/claims_c1_reference*``,
``docs/table2_variants_reference.md``, ``docs/rarity/``), written by one command from a finished run.

Each reference copies the outputs of one Snakemake target from the results folder into docs/: Markdown files get a
heading and a stamp (the command, the commit(s) and the day the outputs were made at, read from the run's job logs:
:func:`retrievegan.runinfo.logged_provenance`), other files (CSV, PNG) are copied byte for byte. Nothing is written
unless every file is there; each file is written atomically.

    python -m retrievegan.refdocs NAME [--results DIR] [--docs DIR]        (make reference-docs NAME=...)
    python -m retrievegan.refdocs NAME --run [--cores N]                   (run the target first)
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from retrievegan import io, runinfo
from retrievegan.errors import InputError

PROFILE = "workflow/profiles/default"


@dataclasses.dataclass(frozen=True)
class Reference:
    """A stored reference: the Snakemake ``target`` (+ ``config`` words for ``--config``) that makes it, a ``title``,
    a sentence saying what it is, and ``files``: (path under the results folder, path under docs/)."""

    name: str
    target: str
    title: str
    about: str
    files: tuple[tuple[str, str], ...]
    config: tuple[str, ...] = ()

    def command(self, cores: int) -> list[str]:
        config = ["--config", *self.config] if self.config else []
        return ["snakemake", "--profile", PROFILE, "--cores", str(cores), *config, self.target]


def _claims(tag: str, doc: str, title: str, about: str) -> Reference:
    return Reference(
        tag,
        tag,
        title,
        about,
        (
            (f"{tag}.md", f"{doc}.md"),
            (f"{tag}.csv", f"{doc}.csv"),
            (f"{tag}_comparisons.csv", f"{doc}_comparisons.csv"),
        ),
    )


REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        _claims(
            "claims_full",
            "claims_reference",
            "Claims, full version: reference run",
            "The paper's claims C1-C6 with at least 3 training seeds per arm (5 for C1's learned arms, both retrieval "
            "modes), C1's controls, the discriminator probe, the mechanism check and the C1 trace (README, \"The "
            "paper's claims, each tested\"; docs/evaluation.md).",
        ),
        _claims(
            "claims_c1",
            "claims_c1_reference",
            "Claim C1 where the adversary can see compatibility: reference run",
            "C1 with a composite discriminator (`retrievegan.composite_adv_weight`), 5 training seeds, against the "
            'same controls as in the paper\'s setting (docs/evaluation.md, "Claim C1").',
        ),
        Reference(
            "rarity",
            "rarity_experiment",
            "Rarity rebalancing: reference run",
            "sg2im and RetrieveGAN with and without the conditional IMLE supplement's rarity rebalancing, per "
            "training seed (docs/rarity.md).",
            (
                ("rarity/rarity_experiment.md", "rarity/rarity_experiment.md"),
                ("rarity/rarity_experiment.csv", "rarity/rarity_experiment.csv"),
                ("rarity/rarity_runs.csv", "rarity/rarity_runs.csv"),
                ("rarity/rarity_experiment.png", "rarity/rarity_experiment.png"),
            ),
        ),
        Reference(
            "table2_variants",
            "all",
            "Table 2 variant rows: reference run",
            "Table 2 with the opt-in variant rows (soft / relaxed retrieval, L_occur as a mean; `make "
            "table2-variants`), one training seed: intervals are over test scene graphs or samples, not seeds.",
            (("tables/table2.md", "table2_variants_reference.md"),),
            ("variants=[retrievegan_soft,retrievegan_relaxed,retrievegan_occur_mean]",),
        ),
    )
}


def stamp(reference: Reference, commits: Sequence[str], date: str, cores: int = 2) -> str:
    """The heading and stamp of a stored Markdown file."""
    command = " ".join(reference.command(cores))
    return (
        f"# {reference.title}\n\n{reference.about}\n\nStored by `python -m retrievegan.refdocs {reference.name}` "
        f"from the outputs of `{command}`, made at commit {', '.join(commits)} on {date}.\n\n"
    )


def store(reference: Reference, results: str | Path, docs: str | Path) -> list[Path]:
    """Copy ``reference``'s files from ``results`` (``results/<dataset>``) to ``docs``; return the written paths."""
    results, docs = Path(results), Path(docs)
    missing = [str(results / src) for src, _ in reference.files if not (results / src).is_file()]
    if missing:
        raise InputError(
            missing[0],
            f"missing: run `{' '.join(reference.command(2))}` first "
            f"({len(missing)} of {len(reference.files)} files missing)",
        )
    commits, date = runinfo.logged_provenance(results / "logs")
    written = []
    for src, dst in reference.files:
        target = docs / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.endswith(".md"):
            io.write_text(target, stamp(reference, commits, date) + (results / src).read_text(encoding="utf-8"))
        else:
            with io.atomic_path(target) as tmp:
                shutil.copyfile(results / src, tmp)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrievegan.refdocs", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(REFERENCES), help="which reference to store")
    parser.add_argument("--results", default="results/synth", help="the run's results/<dataset> folder")
    parser.add_argument("--docs", default="docs", help="where the references live")
    parser.add_argument("--run", action="store_true", help="run the reference's Snakemake target first")
    parser.add_argument("--cores", type=int, default=2, help="Snakemake --cores with --run")
    args = parser.parse_args(argv)
    reference = REFERENCES[args.name]
    if args.run:
        subprocess.run(reference.command(args.cores), check=True)
    try:
        written = store(reference, args.results, args.docs)
    except InputError as exc:
        print(f"refdocs: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"stored {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
