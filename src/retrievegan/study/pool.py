"""The study bundle: every trial any participant may see, built once from the saved retrievals.

``retrievegan study-trials`` writes a self-contained folder the app serves (copy it to the server;
the full patch bank is not needed there)::

    trials.json   study id, question, reference and compared methods, plan parameters, scene graphs
                  as text, the candidate items per method pair and the catch items, source files
    patches.npy   (K, C, C, 3) uint8: the bank rows the items use, row i is bank patch trials.json
                  ``patch_ids[i]``

Pair items: for every test scene graph that both the reference and the other method retrieved for
(``retrievals.json``, ``sample == 0``), the two patch sets in object order. Items where both methods
retrieved exactly the same patches cannot be judged and are left out (counted in ``identical``).

Catch items: the test-split patches of one real image (mutually compatible by definition) against,
object by object, a patch of the same category cropped from a *different* test image (all foil
patches from distinct images). Same split and same categories, so only compatibility tells them apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.data.patches import load_patch_table
from retrievegan.data.scene_graph import IN_IMAGE, SceneGraph, Vocab, read_split, read_vocab
from retrievegan.errors import ConfigError, InputError
from retrievegan.study import dburl
from retrievegan.study.config import UserStudyConfig

FORMAT_VERSION = 2  # 2: access settings; the bundle is validated completely when loaded
QUESTION = "Which set of patches are more mutually compatible and more likely to coexist in the same image?"
CATCH_REAL = "catch_real"
CATCH_FOIL = "catch_foil"
UNHASHED = ("database_url", "access")  # trials.json keys outside the study id
STUDY_ID_RE = re.compile(r"[0-9a-f]{16}")


@dataclasses.dataclass(frozen=True)
class PairItem:
    image_id: int
    reference: tuple[int, ...]  # bank patch ids, object order
    other: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class CatchItem:
    image_id: int
    real: tuple[int, ...]
    foil: tuple[int, ...]
    foil_image_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded study bundle (``trials.json`` + ``patches.npy``)."""

    study_id: str
    question: str
    reference: str
    methods: tuple[str, ...]
    setting: str
    dataset: str
    database_url: str | None  # never with a password (refused when built and when loaded)
    signed_links: bool
    prolific_only: bool
    plan_seed: int
    trials_per_pair: int
    catch_trials: int
    min_response_ms: int
    graphs: Mapping[int, tuple[tuple[str, ...], tuple[str, ...]]]  # image id -> (object names, relations)
    pairs: Mapping[str, tuple[PairItem, ...]]
    catch: tuple[CatchItem, ...]
    patch_rows: Mapping[int, int]  # bank patch id -> row of ``patches``
    patches: np.ndarray  # (K, C, C, 3) uint8, in memory (a file replaced under a running server cannot break it)

    def patch_images(self, patch_ids: tuple[int, ...] | list[int]) -> np.ndarray:
        return np.stack([self.patches[self.patch_rows[int(p)]] for p in patch_ids])


def graph_text(graph: SceneGraph, vocab: Vocab) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(object names in object order, distinct relations "subject (i) predicate object (j)").

    ``i``, ``j`` number the objects from 1 as the patches are labelled; ``__in_image__`` is left out.
    """
    names = tuple(vocab.object_names[o.category] for o in graph.objects[:-1])
    relations: list[str] = []
    for s, p, o in graph.triples:
        predicate = vocab.predicate_names[p]
        if predicate == IN_IMAGE:
            continue
        text = f"{names[s]} ({s + 1}) {predicate} {names[o]} ({o + 1})"
        if text not in relations:
            relations.append(text)
    return names, tuple(relations)


def read_retrievals(
    path: str | Path, method: str, setting: str, graphs: Mapping[int, SceneGraph], table: pd.DataFrame
) -> dict[int, tuple[int, ...]]:
    """Sample-0 patch sets of one method: image id -> bank patch ids (object order), validated.

    Each patch must be a training-bank patch (``split == "train"``) of the object's category, and each
    record must belong to a test scene graph and give one patch per real object.
    """
    path = Path(path)
    data = io.read_json(path, f"retrievals of method {method!r} not found (run its sampling stage)")
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(path, 'expected an object with a "records" list')
    if data.get("method") != method:
        raise InputError(path, f"method is {data.get('method')!r}, expected {method!r}")
    if data.get("setting") != setting:
        raise InputError(path, f"setting is {data.get('setting')!r}, expected {setting!r}")
    bank_split = table["split"].to_numpy()
    bank_category = table["category"].to_numpy()
    out: dict[int, tuple[int, ...]] = {}
    for index, record in enumerate(data["records"]):
        where = f"record {index}"
        if not isinstance(record, dict) or not {"image_id", "sample", "patch_ids"} <= set(record):
            raise InputError(path, "expected keys image_id, sample, patch_ids", where)
        if record["sample"] != 0:
            continue
        image_id = record["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise InputError(path, f"image_id must be an integer, got {image_id!r}", where)
        where = f"record {index}, image_id {image_id}"
        graph = graphs.get(image_id)
        if graph is None:
            raise InputError(path, "image_id is not in the test split", where)
        if image_id in out:
            raise InputError(path, "second sample-0 record for this image", where)
        ids = record["patch_ids"]
        if not isinstance(ids, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in ids):
            raise InputError(path, "patch_ids must be a list of integers", where)
        if len(ids) != graph.num_real_objects:
            raise InputError(path, f"{len(ids)} patch ids for {graph.num_real_objects} objects", where)
        for k, (patch_id, obj) in enumerate(zip(ids, graph.objects[:-1])):
            if not 0 <= patch_id < len(table):
                raise InputError(path, f"patch id {patch_id} (object {k}) is not in the patch bank", where)
            if bank_split[patch_id] != "train":
                raise InputError(
                    path,
                    f"patch id {patch_id} (object {k}) is a {bank_split[patch_id]} patch, not from the training bank",
                    where,
                )
            if int(bank_category[patch_id]) != obj.category:
                raise InputError(
                    path,
                    f"patch id {patch_id} (object {k}) has category "
                    f"{int(bank_category[patch_id])}, the object {obj.category}",
                    where,
                )
        out[image_id] = tuple(ids)
    if not out:
        raise InputError(path, "no sample-0 records")
    return out


def _catch_items(
    graphs: Mapping[int, SceneGraph], table: pd.DataFrame, patch_table_path: Path, count: int, rng: np.random.Generator
) -> list[CatchItem]:
    test = table[table["split"] == "test"]
    by_image = {
        int(image_id): rows.sort_values("object_index") for image_id, rows in test.groupby("image_id", sort=True)
    }
    by_category = {int(c): rows for c, rows in test.groupby("category", sort=True)}
    candidates = [i for i in sorted(graphs) if i in by_image and len(by_image[i]) >= 2]
    if count and len(candidates) < 2:
        raise InputError(patch_table_path, "catch trials need test-split patches of at least two images")
    order = rng.permutation(len(candidates))
    items = []
    for position in order:
        if len(items) == count:
            break
        image_id = candidates[position]
        rows = by_image[image_id]
        if len(rows) != graphs[image_id].num_real_objects:
            raise InputError(
                patch_table_path,
                f"{len(rows)} test patches for {graphs[image_id].num_real_objects} objects",
                f"image_id {image_id}",
            )
        used_images = {image_id}
        foil, foil_images = [], []
        for category in rows["category"].to_numpy():
            pool = by_category[int(category)]
            pool = pool[~pool["image_id"].isin(used_images)]
            if pool.empty:
                break
            pick = pool.iloc[int(rng.integers(len(pool)))]
            foil.append(int(pick["patch_id"]))
            foil_images.append(int(pick["image_id"]))
            used_images.add(int(pick["image_id"]))
        if len(foil) != len(rows):
            continue  # not enough distinct test images with these categories; try another image
        items.append(CatchItem(image_id, tuple(int(p) for p in rows["patch_id"]), tuple(foil), tuple(foil_images)))
    if len(items) < count:
        raise InputError(
            patch_table_path,
            f"only {len(items)} catch items could be built, {count} requested (too few test images share categories)",
        )
    return items


def build_bundle(
    retrievals: Mapping[str, str | Path],
    data_dir: str | Path,
    patch_dir: str | Path,
    cfg: UserStudyConfig,
    out_dir: str | Path,
    dataset: str = "",
    database_url: str | None = None,
) -> dict[str, Any]:
    """Write ``trials.json`` and ``patches.npy`` to ``out_dir``; return the trials.json content."""
    data_dir, patch_dir, out_dir = Path(data_dir), Path(patch_dir), Path(out_dir)
    dburl.refuse_password(database_url, "study bundle database_url")
    needed = (cfg.reference, *cfg.methods)
    missing = [m for m in needed if m not in retrievals]
    if missing:
        raise InputError(out_dir, f"no retrievals file given for method(s) {missing}")
    vocab = read_vocab(data_dir / "vocab.json")
    split = read_split(data_dir / "test.json")
    graphs = {g.image_id: g for g in split.graphs}
    table_path = patch_dir / "patches.csv"
    table = load_patch_table(table_path)
    if not np.array_equal(table["patch_id"].to_numpy(), np.arange(len(table))):
        raise InputError(table_path, "patch_id must equal the row number")
    sets = {m: read_retrievals(retrievals[m], m, cfg.setting, graphs, table) for m in needed}

    pairs: dict[str, list[dict[str, Any]]] = {}
    identical: dict[str, int] = {}
    for other in cfg.methods:
        common = sorted(set(sets[cfg.reference]) & set(sets[other]))
        items = [
            {"image_id": i, "reference": list(sets[cfg.reference][i]), "other": list(sets[other][i])}
            for i in common
            if sets[cfg.reference][i] != sets[other][i]
        ]
        identical[other] = len(common) - len(items)
        if len(items) < cfg.plan.trials_per_pair:
            raise InputError(
                retrievals[other],
                f"only {len(items)} test scene graphs where {other!r} and "
                f"{cfg.reference!r} retrieved different sets; trials_per_pair is "
                f"{cfg.plan.trials_per_pair}",
            )
        pairs[other] = items

    rng = np.random.default_rng([cfg.plan.seed, 0xCA7C])
    catch = _catch_items(graphs, table, table_path, cfg.plan.catch_pool if cfg.plan.catch_trials else 0, rng)

    used_images = sorted({it["image_id"] for items in pairs.values() for it in items} | {c.image_id for c in catch})
    patch_ids = sorted(
        {p for items in pairs.values() for it in items for p in (*it["reference"], *it["other"])}
        | {p for c in catch for p in (*c.real, *c.foil)}
    )
    bank = io.load_array(
        patch_dir / "patches.npy",
        "patch bank not found (run `retrievegan patches`)",
        shape=(len(table), None, None, 3),
        dtype=np.uint8,
    )
    graph_texts = {}
    for i in used_images:
        names, relations = graph_text(graphs[i], vocab)
        graph_texts[str(i)] = {"objects": list(names), "relations": list(relations)}
    content: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "setting": cfg.setting,
        "question": QUESTION,
        "reference": cfg.reference,
        "methods": list(cfg.methods),
        "database_url": database_url,
        "access": dataclasses.asdict(cfg.access),
        "plan": dataclasses.asdict(cfg.plan),
        "graphs": graph_texts,
        "pairs": pairs,
        "identical": identical,
        "catch": [dataclasses.asdict(c) for c in catch],
        "patch_ids": patch_ids,
        "sources": {m: {"path": str(retrievals[m]), "sha256": io.sha256_file(Path(retrievals[m]))} for m in needed},
        "patch_bank_sha256": io.sha256_file(patch_dir / "patches.npy"),
    }
    # The id names the trials shown, not where responses go or who may answer: those are left out of it.
    hashed = {k: v for k, v in content.items() if k not in UNHASHED}
    content["study_id"] = hashlib.sha256(io.dumps_json(hashed).encode("utf-8")).hexdigest()[:16]
    io.save_npy(out_dir / "patches.npy", np.asarray(bank[patch_ids]))
    io.write_json(out_dir / "trials.json", content)
    return content


class _Checker:
    """Type checks of trials.json values; each failure is an InputError naming the file and the record."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, record: str, message: str) -> InputError:
        return InputError(self.path, message, record)

    def get(self, mapping: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in mapping:
            raise self.fail(where, f"missing key {key!r}")
        return mapping[key]

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def items(self, value: Any, where: str, non_empty: bool = False) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        if non_empty and not value:
            raise self.fail(where, "empty list")
        return value

    def text(self, value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
            raise self.fail(where, f"expected a non-empty string{' of the right form' if pattern else ''}")
        return value

    def integer(self, value: Any, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.fail(
                where,
                f"expected an integer{f' >= {minimum}' if minimum is not None else ''}, got {type(value).__name__}",
            )
        return value

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {type(value).__name__}")
        return value

    def ids(self, value: Any, where: str, known: Mapping[int, int], count: int) -> tuple[int, ...]:
        """A list of ``count`` bundle patch ids, each one of ``patch_ids``."""
        out = tuple(self.integer(p, f"{where}[{k}]") for k, p in enumerate(self.items(value, where)))
        if len(out) != count:
            raise self.fail(where, f"{len(out)} patches for a scene graph of {count} objects")
        for k, patch_id in enumerate(out):
            if patch_id not in known:
                raise self.fail(f"{where}[{k}]", f"patch id {patch_id} is not in patch_ids")
        return out


def load_bundle(study_dir: str | Path) -> Bundle:
    """Load and check a study bundle completely: every field's type, every scene graph and patch a trial
    refers to, enough items for a plan, and ``patches.npy`` (read into memory) against ``patch_ids``.

    Anything wrong is an InputError naming the file and the record, raised here (at server start), never
    while a participant is on a trial.
    """
    study_dir = Path(study_dir)
    path = study_dir / "trials.json"
    check = _Checker(path)
    data = check.mapping(io.read_json(path, "study bundle not found (run `retrievegan study-trials`)"), "top level")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise check.fail(
            "format_version",
            f"unsupported format_version {version!r}, expected {FORMAT_VERSION} "
            "(rebuild the bundle with `retrievegan study-trials`)",
        )
    methods = tuple(
        check.text(m, f"methods[{i}]")
        for i, m in enumerate(check.items(check.get(data, "methods", "top level"), "methods", True))
    )
    reference = check.text(check.get(data, "reference", "top level"), "reference")
    if reference in methods or len(set(methods)) != len(methods):
        raise check.fail("methods", "the reference and the compared methods must be distinct")
    database_url = data.get("database_url")
    if database_url is not None:
        check.text(database_url, "database_url")
        try:
            dburl.refuse_password(database_url, f"{path} (database_url)")
        except ConfigError as exc:
            raise check.fail("database_url", str(exc).split(": ", 1)[1]) from exc
    access = check.mapping(data.get("access", {}), "access")
    plan = check.mapping(check.get(data, "plan", "top level"), "plan")
    plan_ints = {
        k: check.integer(check.get(plan, k, "plan"), f"plan.{k}", 0)
        for k in ("seed", "trials_per_pair", "catch_trials", "min_response_ms")
    }
    if plan_ints["trials_per_pair"] < 1:
        raise check.fail("plan.trials_per_pair", "must be >= 1")

    patch_ids = [
        check.integer(p, f"patch_ids[{i}]", 0)
        for i, p in enumerate(check.items(check.get(data, "patch_ids", "top level"), "patch_ids", True))
    ]
    patch_rows = {p: row for row, p in enumerate(patch_ids)}
    if len(patch_rows) != len(patch_ids):
        raise check.fail("patch_ids", "duplicate patch ids")

    graphs: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for key, value in check.mapping(check.get(data, "graphs", "top level"), "graphs").items():
        where = f"graphs[{key!r}]"
        if not key.isdigit():
            raise check.fail(where, "scene graph keys must be image ids")
        value = check.mapping(value, where)
        objects = tuple(
            check.text(o, f"{where}.objects[{i}]")
            for i, o in enumerate(check.items(check.get(value, "objects", where), f"{where}.objects", True))
        )
        relations = tuple(
            check.text(r, f"{where}.relations[{i}]")
            for i, r in enumerate(check.items(check.get(value, "relations", where), f"{where}.relations"))
        )
        graphs[int(key)] = (objects, relations)

    def graph_objects(image_id: Any, where: str) -> int:
        image_id = check.integer(image_id, f"{where}.image_id")
        if image_id not in graphs:
            raise check.fail(f"{where}.image_id", f"scene graph {image_id} is not in graphs")
        return len(graphs[image_id][0])

    raw_pairs = check.mapping(check.get(data, "pairs", "top level"), "pairs")
    pairs: dict[str, tuple[PairItem, ...]] = {}
    for method in methods:
        where = f"pairs[{method!r}]"
        items = []
        for i, item in enumerate(check.items(check.get(raw_pairs, method, "pairs"), where)):
            at = f"{where}[{i}]"
            item = check.mapping(item, at)
            n = graph_objects(check.get(item, "image_id", at), at)
            items.append(
                PairItem(
                    int(item["image_id"]),
                    check.ids(check.get(item, "reference", at), f"{at}.reference", patch_rows, n),
                    check.ids(check.get(item, "other", at), f"{at}.other", patch_rows, n),
                )
            )
        if len(items) < plan_ints["trials_per_pair"]:
            raise check.fail(
                where, f"{len(items)} items, fewer than plan.trials_per_pair = {plan_ints['trials_per_pair']}"
            )
        pairs[method] = tuple(items)
    catch = []
    for i, item in enumerate(check.items(check.get(data, "catch", "top level"), "catch")):
        at = f"catch[{i}]"
        item = check.mapping(item, at)
        n = graph_objects(check.get(item, "image_id", at), at)
        foil_images = tuple(
            check.integer(x, f"{at}.foil_image_ids[{k}]")
            for k, x in enumerate(check.items(check.get(item, "foil_image_ids", at), f"{at}.foil_image_ids"))
        )
        catch.append(
            CatchItem(
                int(item["image_id"]),
                check.ids(check.get(item, "real", at), f"{at}.real", patch_rows, n),
                check.ids(check.get(item, "foil", at), f"{at}.foil", patch_rows, n),
                foil_images,
            )
        )
    if len(catch) < plan_ints["catch_trials"]:
        raise check.fail(
            "catch", f"{len(catch)} catch items, fewer than plan.catch_trials = {plan_ints['catch_trials']}"
        )

    patches = io.load_array(
        study_dir / "patches.npy",
        "bundle patches not found (copy the whole study folder)",
        mmap=False,
        shape=(len(patch_ids), None, None, 3),
        dtype=np.uint8,
    )
    if patches.shape[1] != patches.shape[2] or patches.shape[1] < 1:
        raise InputError(study_dir / "patches.npy", f"expected square patches, got shape {patches.shape}")
    return Bundle(
        study_id=check.text(check.get(data, "study_id", "top level"), "study_id", STUDY_ID_RE),
        question=check.text(check.get(data, "question", "top level"), "question"),
        reference=reference,
        methods=methods,
        setting=check.text(check.get(data, "setting", "top level"), "setting"),
        dataset=str(data.get("dataset") or ""),
        database_url=database_url,
        signed_links=check.flag(access.get("signed_links", False), "access.signed_links"),
        prolific_only=check.flag(access.get("prolific_only", False), "access.prolific_only"),
        plan_seed=plan_ints["seed"],
        trials_per_pair=plan_ints["trials_per_pair"],
        catch_trials=plan_ints["catch_trials"],
        min_response_ms=plan_ints["min_response_ms"],
        graphs=graphs,
        pairs=pairs,
        catch=tuple(catch),
        patch_rows=patch_rows,
        patches=patches,
    )
