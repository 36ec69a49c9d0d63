"""Boxes, masks, layouts, crops, CRN and discriminators: shapes and exact geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retrievegan.models.crn import RefinementNetwork
from retrievegan.models.discriminators import AcCropDiscriminator, PatchDiscriminator
from retrievegan.models.init import build
from retrievegan.models.layout import (
    BoxRegressor,
    MaskRegressor,
    boxes_to_grid,
    boxes_to_layout,
    crop_boxes,
    masks_to_layout,
    positions_in_image,
)

GEN = torch.Generator


def test_full_box_reproduces_the_mask():
    mask = (torch.arange(64).view(8, 8) % 3 == 0).float()
    vec = torch.tensor([[2.0, -1.0]])
    layout = masks_to_layout(vec, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), mask[None], torch.tensor([0]), 1, 8)
    assert layout.shape == (1, 2, 8, 8)
    assert torch.allclose(layout[0, 0], 2 * mask, atol=1e-6) and torch.allclose(layout[0, 1], -mask, atol=1e-6)


def test_box_places_the_object_in_its_quadrant():
    layout = boxes_to_layout(torch.ones(1, 1), torch.tensor([[0.5, 0.0, 1.0, 0.5]]), torch.tensor([0]), 1, 16)[0, 0]
    assert layout[:8, 8:].min() > 0.99  # the top-right quadrant is covered
    assert layout[8:, :].abs().max() == 0 and layout[:, :7].abs().max() == 0  # nothing outside (1 px blur)


def test_layout_sums_objects_per_image_and_matches_direct_sampling():
    gen = GEN().manual_seed(0)
    num, dim, size = 7, 5, 16
    vecs = torch.randn(num, dim, generator=gen)
    corner = torch.rand(num, 2, generator=gen) * 0.5
    boxes = torch.cat([corner, corner + 0.2 + 0.3 * torch.rand(num, 2, generator=gen)], 1)
    masks = torch.rand(num, 8, 8, generator=gen)
    obj_to_img = torch.tensor([2, 0, 0, 1, 2, 2, 0])  # not grouped: the layout must not assume order
    layout = masks_to_layout(vecs, boxes, masks, obj_to_img, 3, size)
    # sg2im's formulation: sample (vec * mask) into the box, then sum per image
    sampled = F.grid_sample(
        vecs.view(num, dim, 1, 1) * masks.unsqueeze(1), boxes_to_grid(boxes, size), align_corners=False
    )
    expected = torch.zeros(3, dim, size, size).index_add(0, obj_to_img, sampled)
    assert torch.allclose(layout, expected, atol=1e-5)
    position, max_objects = positions_in_image(obj_to_img, 3)
    assert position.tolist() == [0, 0, 1, 0, 1, 2, 2] and max_objects == 3


def test_crop_boxes_cuts_the_right_pixels():
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0]])
    crops = crop_boxes(image, boxes, torch.tensor([0, 1, 1]), 4)
    assert crops.shape == (3, 3, 4, 4)
    assert torch.allclose(crops[1], image[1, :, 0:4, 4:8])  # aligned half-size crops are exact
    assert torch.allclose(crops[2], image[1, :, 4:8, 0:4])
    full = crop_boxes(image, boxes[:1], torch.tensor([0]), 8)
    assert torch.allclose(full[0], image[0])


def test_regressors_crn_and_discriminators_shapes():
    gen = GEN().manual_seed(0)
    vecs = torch.randn(6, 16)
    assert build(lambda: BoxRegressor(16, 32), gen)(vecs).shape == (6, 4)
    assert build(lambda: MaskRegressor(16, 16), gen)(vecs).shape == (6, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        MaskRegressor(16, 12)
    crn = build(lambda: RefinementNetwork(10, (32, 16, 8)), gen)
    assert crn(torch.randn(2, 10, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible"):
        crn(torch.randn(2, 10, 36, 36))
    images = torch.randn(2, 3, 64, 64)
    d_img = build(lambda: PatchDiscriminator("C4-8-2,C4-16-2,C4-32-2"), gen)
    assert d_img(images).shape == (2, 1, 6, 6)  # valid padding: 64 -> 31 -> 14 -> 6
    d_obj = build(lambda: AcCropDiscriminator(12, "C4-8-2,C4-16-2,C4-32-2", crop_size=32, fc_dim=24), gen)
    scores, logits = d_obj(images, torch.tensor([[0.1, 0.1, 0.6, 0.5]] * 5), torch.tensor([0, 0, 1, 1, 1]))
    assert scores.shape == (5,) and logits.shape == (5, 12)
