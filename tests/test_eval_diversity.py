"""DS (LPIPS between the two samples of one scene graph): identical pairs give 0, explicit AlexNet
loading, batch-size independence, missing weights fail clearly (no download, no substitute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from eval_support import add_noise, smooth_images, tiny_synthnet
from retrievegan.eval import diversity
from retrievegan.eval.samples import ArrayDataset, PairDataset
from retrievegan.eval.weights import ALEXNET_URL, MissingWeightsError


@pytest.fixture(scope="module")
def random_alexnet(tmp_path_factory):
    """torchvision AlexNet with random weights (stand-in for the ImageNet file, same format)."""
    path = tmp_path_factory.mktemp("alex") / "alexnet-random.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def synthnet_path(tmp_path_factory):
    return tiny_synthnet(tmp_path_factory.mktemp("ds") / "synthnet.pt", seed=2)


@pytest.fixture(scope="module")
def images():
    return smooth_images(12, 32, seed=4)


def distances(images0, images1, model, batch_size=4):
    return diversity.pair_distances(PairDataset(ArrayDataset(images0), ArrayDataset(images1)), model, batch_size)


@pytest.mark.parametrize("backbone", ["alex", "synthnet"])
def test_identical_pairs_have_zero_ds_and_different_pairs_do_not(backbone, random_alexnet, synthnet_path, images):
    spec = diversity.resolve_backbone(backbone, random_alexnet, synthnet_path)
    model = spec.build()
    same = distances(images, images, model)
    assert same.shape == (12,)
    np.testing.assert_allclose(same, 0.0, atol=1e-7)
    other = distances(images, add_noise(images, 40, seed=1), model)
    assert np.all(other > 1e-4)
    assert spec.network == f"lpips_{backbone}"
    assert spec.comparable_to_paper is (backbone == "alex")


def test_ds_does_not_depend_on_the_batch_size(synthnet_path, random_alexnet, images):
    noisy = add_noise(images, 30, seed=3)
    for backbone in ("alex", "synthnet"):
        model = diversity.resolve_backbone(backbone, random_alexnet, synthnet_path).build()
        a = distances(images, noisy, model, batch_size=1)
        b = distances(images, noisy, model, batch_size=12)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_alexnet_trunk_is_loaded_from_the_given_file(random_alexnet):
    state = torch.load(random_alexnet, weights_only=True)
    model = diversity.LpipsAlex(random_alexnet).model
    torch.testing.assert_close(getattr(model.net.slice1, "0").weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(model.net.slice5, "10").bias, state["features.10.bias"])
    lin = torch.load(diversity.lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.lin0.model[1].weight, lin["lin0.model.1.weight"])


def test_building_lpips_leaves_the_global_rng_alone(random_alexnet):
    before = torch.random.get_rng_state()
    diversity.LpipsAlex(random_alexnet)
    assert torch.equal(before, torch.random.get_rng_state())


def test_missing_alexnet_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(MissingWeightsError) as info:
        diversity.resolve_backbone("alex")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and ALEXNET_URL in message
    assert "evaluation.lpips_alex_weights" in message and "no other network is substituted" in message


def test_wrong_file_is_not_taken_for_alexnet(tmp_path):
    from retrievegan.errors import InputError

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a torchvision AlexNet state dict"):
        diversity.LpipsAlex(tmp_path / "bad.pth")
