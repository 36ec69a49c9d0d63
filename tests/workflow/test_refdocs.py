"""retrievegan.refdocs: a finished run's outputs stored in docs/ with the commit and day they were made at."""

from __future__ import annotations

import json

import pytest

from retrievegan import refdocs
from retrievegan.errors import InputError
from retrievegan.runinfo import PROVENANCE_TAG


def _run(results, commit="abc1234def", day="2026-12-01T10:00:00"):
    (results / "logs").mkdir(parents=True)
    record = {"git_sha": commit, "recorded_utc": day}
    (results / "logs/claims_c1.log").write_text(f"{PROVENANCE_TAG} {results}/claims_c1.md {json.dumps(record)}\n")
    (results / "claims_c1.md").write_text("## C1\n\n| arm | value |\n")
    (results / "claims_c1.csv").write_text("claim,verdict\nC1,supported\n")
    (results / "claims_c1_comparisons.csv").write_text("a,b\n1,2\n")


def test_store_copies_the_files_and_stamps_the_markdown(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    _run(results)
    written = refdocs.store(refdocs.REFERENCES["claims_c1"], results, docs)
    assert [p.name for p in written] == [
        "claims_c1_reference.md",
        "claims_c1_reference.csv",
        "claims_c1_reference_comparisons.csv",
    ]
    text = (docs / "claims_c1_reference.md").read_text()
    assert text.startswith("# Claim C1 where the adversary can see compatibility: reference run\n")
    assert "made at commit abc1234def on 2026-12-01" in text and "snakemake --profile" in text
    assert text.endswith("## C1\n\n| arm | value |\n")
    assert (docs / "claims_c1_reference.csv").read_bytes() == (results / "claims_c1.csv").read_bytes()


def test_nothing_is_written_when_a_file_or_the_provenance_is_missing(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    _run(results)
    (results / "claims_c1_comparisons.csv").unlink()
    with pytest.raises(InputError, match="claims_c1_comparisons.csv.*1 of 3 files missing"):
        refdocs.store(refdocs.REFERENCES["claims_c1"], results, docs)
    assert not docs.exists()
    (results / "claims_c1_comparisons.csv").write_text("a\n")
    (results / "logs/claims_c1.log").write_text("no provenance here\n")
    with pytest.raises(InputError, match="no \\[provenance\\] line"):
        refdocs.store(refdocs.REFERENCES["claims_c1"], results, docs)
    assert not docs.exists()


def test_every_reference_names_its_target_and_files():
    for name, ref in refdocs.REFERENCES.items():
        assert (
            ref.name == name
            and ref.files
            and ref.command(2)[:4] == ["snakemake", "--profile", refdocs.PROFILE, "--cores"]
        )
        assert len({dst for _, dst in ref.files}) == len(ref.files)
    assert refdocs.main(["claims_c1", "--results", "/nonexistent", "--docs", "/nonexistent"]) == 2
