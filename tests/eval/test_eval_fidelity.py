"""FID / IS through torch-fidelity: sanity, agreement with an independent numpy/scipy computation and
with torch-fidelity's calculate_metrics, batch-size independence, stored statistics, missing weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from eval_support import add_noise, smooth_images, tiny_synthnet

from retrievegan.errors import InputError
from retrievegan.eval import fidelity
from retrievegan.eval.image_datasets import ArrayDataset
from retrievegan.weights import INCEPTION_URL, MissingWeightsError


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = tiny_synthnet(tmp_path_factory.mktemp("fid") / "synthnet.pt", seed=1)
    return fidelity.resolve_extractor("synthnet", path)


@pytest.fixture(scope="module")
def images():
    return smooth_images(48, 32, seed=0)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance with scipy's matrix square root (independent of torch-fidelity)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def reference_is(logits: np.ndarray, splits: int, seed: int) -> tuple[float, float]:
    """Inception score in numpy, same split convention (shuffle with RandomState(seed), N*i//splits)."""
    n = len(logits)
    x = logits[np.random.RandomState(seed).permutation(n)].astype(np.float64)
    x = x - x.max(1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        q = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(q)), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def features(images, extractor, batch_size=16):
    return fidelity.extract_features(ArrayDataset(images), extractor, batch_size)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(images, extractor):
    base = fidelity.fid_statistics(features(images, extractor)[extractor.fid_layer])
    assert abs(fidelity.fid_from_statistics(base, base)) < 1e-6
    fids = []
    for sigma in (8, 32, 96):
        noisy = features(add_noise(images, sigma, seed=5), extractor)[extractor.fid_layer]
        fids.append(fidelity.fid_from_statistics(fidelity.fid_statistics(noisy), base))
    assert fids[0] > 1e-4
    assert fids[0] < fids[1] < fids[2], fids


def test_fid_and_is_agree_with_an_independent_computation(images, extractor):
    real = features(images, extractor)
    fake = features(add_noise(images, 40, seed=2)[::-1].copy(), extractor)
    ours = fidelity.fid_from_statistics(
        fidelity.fid_statistics(fake[extractor.fid_layer]), fidelity.fid_statistics(real[extractor.fid_layer])
    )
    expected = reference_fid(fake[extractor.fid_layer].numpy(), real[extractor.fid_layer].numpy())
    assert ours == pytest.approx(expected, rel=1e-3, abs=1e-5)
    mean, std = fidelity.inception_score(fake[extractor.isc_layer], splits=4, seed=7)
    ref_mean, ref_std = reference_is(fake[extractor.isc_layer].numpy(), 4, 7)
    assert mean == pytest.approx(ref_mean, rel=1e-6)
    assert std == pytest.approx(ref_std, rel=1e-5, abs=1e-9)
    assert 1.2 < mean < 5.0  # 5 themes


def test_stored_statistics_match_calculate_metrics(images, extractor, tmp_path):
    """The declared-file path gives what torch-fidelity's calculate_metrics gives on the same inputs."""
    import torch_fidelity

    np.save(tmp_path / "test_images.npy", images)
    fidelity.compute_reference(tmp_path / "test_images.npy", "test", extractor, 16, "cpu", tmp_path / "ref.npz")
    ref = fidelity.load_reference(tmp_path / "ref.npz")
    fake_images = add_noise(images, 30, seed=3)
    fake = features(fake_images, extractor)
    ours_fid = fidelity.fid_from_statistics(fidelity.fid_statistics(fake[extractor.fid_layer]), ref.stats)
    ours_is = fidelity.inception_score(fake[extractor.isc_layer], 3, 11)
    theirs = torch_fidelity.calculate_metrics(
        input1=ArrayDataset(fake_images),
        input2=ArrayDataset(images),
        fid=True,
        isc=True,
        cuda=False,
        feature_extractor="synthnet",
        feature_extractor_weights_path=str(extractor.weights),
        cache=False,
        isc_splits=3,
        rng_seed=11,
        batch_size=16,
        save_cpu_ram=True,
        verbose=False,
    )
    assert ours_fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours_is[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours_is[1] == pytest.approx(theirs["inception_score_std"], rel=1e-6)
    assert ref.meta["num_images"] == 48 and ref.meta["extractor"]["weights_sha256"] == extractor.weights_sha256


def test_metrics_do_not_depend_on_the_batch_size(images, extractor):
    results = []
    for batch_size in (1, 5, 64):
        f = features(images, extractor, batch_size)
        results.append(f)
        np.testing.assert_allclose(
            f[extractor.fid_layer].numpy(), results[0][extractor.fid_layer].numpy(), rtol=1e-5, atol=1e-6
        )
    ref = fidelity.fid_statistics(results[0][extractor.fid_layer])
    fake = features(add_noise(images, 30, seed=9), extractor, 7)
    fid_a = fidelity.fid_from_statistics(fidelity.fid_statistics(fake[extractor.fid_layer]), ref)
    fid_b = fidelity.fid_from_statistics(
        fidelity.fid_statistics(fake[extractor.fid_layer]), fidelity.fid_statistics(results[2][extractor.fid_layer])
    )
    assert fid_a == pytest.approx(fid_b, rel=1e-4)
    is_a = fidelity.inception_score(results[0][extractor.isc_layer], 4, 0)
    is_b = fidelity.inception_score(results[1][extractor.isc_layer], 4, 0)
    assert is_a[0] == pytest.approx(is_b[0], rel=1e-5)


def test_reference_made_by_another_extractor_is_refused(images, extractor, tmp_path):
    np.save(tmp_path / "val_images.npy", images)
    other = fidelity.resolve_extractor("synthnet", tiny_synthnet(tmp_path / "other.pt", seed=99))
    fidelity.compute_reference(tmp_path / "val_images.npy", "val", other, 16, "cpu", tmp_path / "ref.npz")
    with pytest.raises(InputError, match="weights_sha256"):
        fidelity.load_reference(tmp_path / "ref.npz").check_extractor(extractor)


def test_missing_inception_weights_fail_with_file_place_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingWeightsError) as info:
        fidelity.resolve_extractor("inception")
    message = str(info.value)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    assert str(expected) in message
    assert INCEPTION_URL in message and "evaluation.inception_weights" in message
    assert "Nothing is downloaded" in message
    assert not (tmp_path / "torch_home").exists()  # nothing was created, let alone downloaded
    with pytest.raises(MissingWeightsError, match="configured path"):
        fidelity.resolve_extractor("inception", inception_weights=tmp_path / "nowhere.pth")


def test_inception_weights_are_found_in_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not really weights")
    from retrievegan.weights import resolve_inception_weights

    assert resolve_inception_weights(None) == path


def test_synthnet_registration_is_idempotent_and_matches_the_model(extractor, images):
    from torch_fidelity.utils import create_feature_extractor

    from retrievegan.eval.synthnet import load_synthnet, register_synthnet

    register_synthnet()
    register_synthnet()
    fe = create_feature_extractor(
        "synthnet",
        ["pool", "logits_theme"],
        cuda=False,
        verbose=False,
        feature_extractor_weights_path=str(extractor.weights),
    )
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).contiguous()
    pool, logits = fe(x)
    direct = load_synthnet(extractor.weights)(x)
    torch.testing.assert_close(pool, direct["pool"])
    torch.testing.assert_close(logits, direct["logits_theme"])


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 (inception-v3-compat) with random, seeded weights in its weights-file format
    (a stand-in for the real file, which is not on this machine; nothing is downloaded)."""
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    with (
        torch.random.fork_rng(devices=[]),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
        mock.patch("torch.load", lambda *a, **k: {}),
    ):
        torch.manual_seed(7)
        model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path="unused"
        )
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_inception_path_matches_calculate_metrics(images, random_inception, tmp_path):
    """The paper's extractor path (inception-v3-compat, weights from a file): our stored-reference FID / IS equal
    torch-fidelity's calculate_metrics with the same weights file on the same images."""
    import torch_fidelity

    extractor = fidelity.resolve_extractor("inception", inception_weights=random_inception)
    assert (extractor.fidelity_name, extractor.fid_layer, extractor.isc_layer) == (
        "inception-v3-compat",
        "2048",
        "logits_unbiased",
    )
    real, fake_images = images[:8], add_noise(images[8:16], 30, seed=4)
    np.save(tmp_path / "test_images.npy", real)
    fidelity.compute_reference(tmp_path / "test_images.npy", "test", extractor, 4, "cpu", tmp_path / "ref.npz")
    ref = fidelity.load_reference(tmp_path / "ref.npz")
    fake = fidelity.extract_features(ArrayDataset(fake_images), extractor, 4)
    ours_fid = fidelity.fid_from_statistics(fidelity.fid_statistics(fake[extractor.fid_layer]), ref.stats)
    ours_is = fidelity.inception_score(fake[extractor.isc_layer], 2, 3)
    theirs = torch_fidelity.calculate_metrics(
        input1=ArrayDataset(fake_images),
        input2=ArrayDataset(real),
        fid=True,
        isc=True,
        cuda=False,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(random_inception),
        cache=False,
        isc_splits=2,
        rng_seed=3,
        batch_size=4,
        save_cpu_ram=True,
        verbose=False,
    )
    assert np.isfinite(ours_fid) and ours_fid > 0
    assert ours_fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours_is[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours_is[1] == pytest.approx(theirs["inception_score_std"], rel=1e-6)
