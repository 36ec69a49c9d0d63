"""DS (LPIPS between the two samples of one scene graph): identical pairs give 0, explicit AlexNet
loading, batch-size independence, missing weights fail clearly (no download, no substitute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from eval_support import add_noise, smooth_images, tiny_synthnet

from retrievegan.eval import diversity
from retrievegan.eval.image_datasets import ArrayDataset, PairDataset
from retrievegan.weights import ALEXNET_URL, MissingWeightsError


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


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (lpips / torchvision must not download)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_lpips_wrapper_equals_stock_lpips_with_the_same_trunk(tiny_dataset, tmp_path, no_network):
    """The project's LPIPS (explicit AlexNet file + the lpips package's v0.1 linear layers) gives the same
    distances as stock `lpips.LPIPS(net='alex', pretrained=True)` whose trunk holds the same (random, seeded)
    weights: pnet_rand builds the trunk without a download, pretrained=True loads the shipped linear layers."""
    import lpips

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2024)
        stock = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    trunk = {f"features.{key.split('.', 1)[1]}": value for key, value in stock.net.state_dict().items()}
    torch.save(trunk, tmp_path / "alexnet-seeded.pth")  # torchvision's AlexNet layout, as the ImageNet file
    ours = diversity.LpipsAlex(tmp_path / "alexnet-seeded.pth")
    real = np.load(tiny_dataset.data_dir / "train_images.npy")[:24]  # rendered benchmark scenes, 32 px
    big = np.repeat(np.repeat(real, 2, axis=1), 2, axis=2)  # and the same at 64 px
    for images in (real, big):
        x0 = torch.from_numpy(images[:-1]).permute(0, 3, 1, 2).contiguous()
        x1 = torch.from_numpy(images[1:]).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            expected = stock(x0.float() / 127.5 - 1.0, x1.float() / 127.5 - 1.0).reshape(-1)
            got = ours(x0, x1)
        assert float(expected.abs().max()) > 1e-3  # different scenes: not trivially zero
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # and through the metric's own batching
    np.testing.assert_allclose(
        distances(real[:-1], real[1:], ours, batch_size=5), expected_np(stock, real), rtol=0, atol=1e-5
    )


def expected_np(stock, images):
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return stock(x[:-1], x[1:]).reshape(-1).double().numpy()
