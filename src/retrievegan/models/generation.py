"""Image generation from selected patches (RetrieveGAN supplement §3; PasteGAN's generator).

RetrieveGAN "adopts the strategies of PasteGAN for the scene-graph encoding and image generation", so
both methods build :class:`PatchSceneGenerator` (with their own config values):

1. **scene-graph encoder** E (:class:`~retrievegan.models.graph.SceneGraphEncoder`, sg2im's graph
   convolution) -> object vectors ``o_i`` and predicate vectors ``r_k``; a box regressor on ``o_i``;
2. **crop encoder** (:class:`CropEncoder`): convolution + down-sampling over each selected patch ->
   crop feature map ``c_i`` ``(D_c, h, w)``;
3. **object^2 refiner** (:class:`CropRefiner`): graph convolution whose nodes are the crop feature
   maps (2-D convolutions instead of the encoder's fully-connected layers): every triple
   ``(c_s, r_p, c_o)`` (``r_p`` expanded over ``h x w``) gives subject / predicate / object candidates,
   averaged per object (the encoder's pooling), plus a skip path from the node's own map;
4. **object-image fuser** (:class:`ObjectImageFuser`): ``u_i = [c'_i ; o_i]`` warped into the object's
   box on a ``canvas_size`` canvas; per pixel ``s_i = f(u_i) . h(r_{p_i}) / sqrt(A)`` with ``r_{p_i}``
   the relation feature of the object's ``__in_image__`` triple; ``a_i`` = softmax of ``s_i`` over
   the objects whose box covers the pixel, times the box coverage; ``a = sum_i a_i g(u_i)``; canvas
   ``L = lambda_a a + u_img`` with ``u_img = [c'_img ; o_img]`` of the image node over the whole canvas;
5. **decoder** (:class:`Decoder`): optional residual blocks at canvas resolution (PasteGAN's
   "canvas_res"), then up-sampling + convolution stages to the image size.

The ``__image__`` node has no patch: its crop feature map starts at zero and is filled by the refiner
from the ``__in_image__`` triples (it becomes ``c'_img`` of the canvas).

Deviations from PasteGAN's released code (documented in docs/architecture.md): no flow / mask nets in
the refiner; the fuser softmax is restricted to the objects covering a pixel (PasteGAN normalises over
every object everywhere); the relation feature is the encoder's predicate vector (PasteGAN
concatenates the refiner's predicate maps); the decoder up-samples a low-resolution canvas (PasteGAN
runs a CRN over a full-resolution canvas). Shapes: ``O`` objects (with image nodes), ``T`` triples,
``N`` images, crops ``C x C``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.models.graph import edge_counts, pool_edges
from retrievegan.models.layers import activation, cnn, norm2d
from retrievegan.models.layout import boxes_to_grid, crop_boxes

IN_IMAGE = 0  # predicate index of __in_image__ (vocab convention)


def _conv_block(c_in: int, c_out: int, kernel: int, normalization: str, activation_name: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)]
    norm = norm2d(normalization, c_out)
    if norm is not None:
        layers.append(norm)
    layers.append(activation(activation_name))
    return layers


class CropEncoder(nn.Module):
    """crops (O, 3, C, C) -> crop feature maps (O, D_c, h, w).

    A strided CNN (``arch`` in the notation of :func:`retrievegan.models.layers.cnn`, "same" padding),
    normalisation + activation, then a 1x1 convolution to ``out_dim`` + normalisation + activation
    (PasteGAN's ``output_mean`` head).
    """

    def __init__(self, arch: str, out_dim: int, normalization: str = "batch", activation_name: str = "leakyrelu-0.2"):
        super().__init__()
        body, channels = cnn(arch, 3, normalization, activation_name, padding="same")
        layers: list[nn.Module] = [body]
        norm = norm2d(normalization, channels)
        if norm is not None:
            layers.append(norm)
        layers.append(activation(activation_name))
        layers += _conv_block(channels, out_dim, 1, normalization, activation_name)
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops)


class CropGraphConv(nn.Module):
    """One object^2-refiner layer: graph convolution over crop feature maps.

    obj_maps (O, C, h, w), pred_maps (T, P, h, w), edges (T, 2) ``[s, o]`` ->
    new obj_maps (O, C_out, h, w), new pred_maps (T, P_out, h, w).
    """

    def __init__(
        self,
        obj_dim: int,
        pred_dim: int,
        hidden_dim: int,
        out_dim: int,
        pred_out_dim: int,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
        pooling: str = "avg",
    ):
        super().__init__()
        self.hidden_dim, self.pred_out_dim, self.pooling = hidden_dim, pred_out_dim, pooling
        self.net1 = nn.Sequential(
            *_conv_block(2 * obj_dim + pred_dim, hidden_dim, 3, normalization, activation_name),
            nn.Conv2d(hidden_dim, 2 * hidden_dim + pred_out_dim, 3, padding=1),
        )
        self.pred_post = nn.Sequential(
            *[m for m in (norm2d(normalization, pred_out_dim),) if m is not None], activation(activation_name)
        )
        self.net2 = nn.Sequential(
            *_conv_block(hidden_dim, hidden_dim, 3, normalization, activation_name), nn.Conv2d(hidden_dim, out_dim, 1)
        )
        self.skip = nn.Conv2d(obj_dim, out_dim, 1)
        self.post = nn.Sequential(
            *[m for m in (norm2d(normalization, out_dim),) if m is not None], activation(activation_name)
        )

    def forward(
        self, obj_maps: torch.Tensor, pred_maps: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s_idx, o_idx = edges[:, 0], edges[:, 1]
        num, _, h, w = obj_maps.shape
        t = self.net1(torch.cat([obj_maps[s_idx], pred_maps, obj_maps[o_idx]], dim=1))
        hid, p = self.hidden_dim, self.pred_out_dim
        subj, pred, obj = t[:, :hid], t[:, hid : hid + p], t[:, hid + p :]
        pooled = pool_edges(
            subj.reshape(subj.shape[0], -1), obj.reshape(obj.shape[0], -1), s_idx, o_idx, num, self.pooling, counts
        ).view(num, hid, h, w)
        return self.post(self.net2(pooled) + self.skip(obj_maps)), self.pred_post(pred)


class CropRefiner(nn.Module):
    """Object^2 refiner: ``num_layers`` :class:`CropGraphConv` layers of constant width.

    crop_maps (O, D_c, h, w), pred_vecs (T, P), edges (T, 2) -> refined crop maps (O, D_c, h, w).
    """

    def __init__(
        self,
        crop_dim: int,
        pred_dim: int,
        hidden_dim: int,
        num_layers: int = 2,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            CropGraphConv(crop_dim, pred_dim, hidden_dim, crop_dim, pred_dim, normalization, activation_name)
            for _ in range(num_layers)
        )

    def forward(self, crop_maps: torch.Tensor, pred_vecs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        h, w = crop_maps.shape[-2:]
        pred_maps = pred_vecs[:, :, None, None].expand(-1, -1, h, w)
        counts = edge_counts(edges[:, 0], edges[:, 1], crop_maps.shape[0], crop_maps.dtype)  # shared by every layer
        for layer in self.layers:
            crop_maps, pred_maps = layer(crop_maps, pred_maps, edges, counts)
        return crop_maps


class ObjectImageFuser(nn.Module):
    """Object-image fuser (supplement eq. 1-2): refined crops + object vectors -> scene canvas.

    forward(crop_maps (O, D_c, h, w), obj_vecs (O, D_o), rel_vecs (O, D_r), boxes (O, 4), obj_to_img (O,),
    is_image (O,) bool, num_images N) -> canvas (N, D_c + D_o, S_c, S_c). ``rel_vecs`` row i is the
    relation feature ``r_{p_i}`` of object i's ``__in_image__`` triple (ignored for image nodes); every
    image must have exactly one image node (its ``u_img`` spans the whole canvas whatever its box).
    """

    def __init__(
        self, crop_dim: int, obj_dim: int, rel_dim: int, attention_dim: int, canvas_size: int, lambda_a: float = 1.0
    ):
        super().__init__()
        dim = crop_dim + obj_dim
        self.f = nn.Conv2d(dim, attention_dim, 1)
        self.h = nn.Linear(rel_dim, attention_dim)
        self.g = nn.Conv2d(dim, dim, 1)
        self.canvas_size, self.lambda_a, self.attention_dim = canvas_size, lambda_a, attention_dim

    def forward(
        self,
        crop_maps: torch.Tensor,
        obj_vecs: torch.Tensor,
        rel_vecs: torch.Tensor,
        boxes: torch.Tensor,
        obj_to_img: torch.Tensor,
        is_image: torch.Tensor,
        num_images: int,
    ) -> torch.Tensor:
        size = self.canvas_size
        num, _, h, w = crop_maps.shape
        u = torch.cat([crop_maps, obj_vecs[:, :, None, None].expand(-1, -1, h, w)], dim=1)  # (O, D, h, w)
        full = torch.arange(4, device=boxes.device).ge(2)  # (4,) an image node's box (0, 0, 1, 1), made on the device
        place = torch.where(is_image[:, None], full, boxes)  # (not from a list: a blocking host copy on a GPU)
        grid = boxes_to_grid(place.to(u.dtype), size)
        warped = F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (O, D, S, S)
        cover = F.grid_sample(
            u.new_ones(num, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (O, 1, S, S) box coverage in [0, 1]
        real_rows, img_rows = split_objects(is_image, obj_to_img, num_images)
        canvas = warped.index_select(0, img_rows)  # u_img: (N, D, S, S)
        if real_rows.shape[0] == 0:
            return canvas
        ur, cr = warped.index_select(0, real_rows), cover.index_select(0, real_rows)
        scores = (self.f(ur) * self.h(rel_vecs.index_select(0, real_rows))[:, :, None, None]).sum(1, keepdim=True)
        scores = scores / math.sqrt(self.attention_dim)  # (R, 1, S, S)
        # softmax over the objects of each image that cover the pixel: pad to (N, R, S, S) (R bounds every image's
        # count without reading it on the host; the padding's floor adds exact zeros); a finite floor instead of
        # -inf keeps uncovered pixels NaN-free (their weight is then zeroed by the coverage)
        floor = torch.finfo(scores.dtype).min
        scores = scores.masked_fill(cr <= 0, floor)
        img = obj_to_img.index_select(0, real_rows)
        pos = real_rows - first_rows(img_rows).index_select(0, img)  # rank of each real object in its image
        padded = scores.new_full((num_images, real_rows.shape[0], size, size), floor)
        padded = padded.index_put((img, pos), scores[:, 0])
        att = torch.softmax(padded, dim=1)
        a_i = att[img, pos][:, None] * cr  # (R, 1, S, S), faded at soft box edges, 0 outside the box
        contrib = a_i * self.g(ur)
        fused = contrib.new_zeros(canvas.shape).index_add(0, img, contrib)
        return canvas + self.lambda_a * fused


def split_objects(
    is_image: torch.Tensor, obj_to_img: torch.Tensor, num_images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(real rows (R,), image-node rows (N,)) without a host synchronisation: a stable sort puts the real
    objects first, in order. The batch layout (``collate_scene_graphs``: the objects of each image contiguous,
    in image order, its one ``__image__`` node last) is checked on the device (``torch._assert_async``)."""
    order = torch.argsort(is_image.to(torch.uint8), stable=True)
    num = is_image.shape[0] - num_images
    real_rows, img_rows = order[:num], order[num:]
    images = torch.arange(num_images + 1, device=obj_to_img.device)
    after = torch.cat([obj_to_img, images[-1:]]).index_select(0, img_rows + 1)  # the image of the next row
    ok = (
        (is_image.sum() == num_images)
        & (obj_to_img[1:] >= obj_to_img[:-1]).all()
        & (obj_to_img.index_select(0, img_rows) == images[:-1]).all()
        & (after == images[1:]).all()
    )
    torch._assert_async(ok, "every image needs its objects contiguous, in image order, its one __image__ node last")
    return real_rows, img_rows


def first_rows(image_rows: torch.Tensor) -> torch.Tensor:
    """(N,) first object row of each image when every image's objects are contiguous and end with its
    ``__image__`` node (the collate function's layout): 0, then one past the previous image's node."""
    return torch.cat([image_rows.new_zeros(1), image_rows[:-1] + 1])


class ResidualBlock(nn.Module):
    """x (N, C, H, W) -> x + conv-norm-act-conv-norm(x)."""

    def __init__(self, channels: int, normalization: str = "batch", activation_name: str = "leakyrelu-0.2"):
        super().__init__()
        layers = _conv_block(channels, channels, 3, normalization, activation_name)
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        norm = norm2d(normalization, channels)
        if norm is not None:
            layers.append(norm)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Decoder(nn.Module):
    """canvas (N, D, S_c, S_c) -> image (N, 3, S_c * 2^(len(dims)-1), ...) (ImageNet-normalised space).

    3x3 conv to ``dims[0]``, ``res_blocks`` residual blocks at canvas resolution, then for every further
    width: nearest x2 up-sampling, 3x3 conv, normalisation, activation; a final 3x3 conv to RGB.
    """

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int],
        res_blocks: int = 0,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
    ):
        super().__init__()
        if not dims:
            raise ValueError("decoder dims must not be empty")
        layers: list[nn.Module] = _conv_block(in_dim, dims[0], 3, normalization, activation_name)
        layers += [ResidualBlock(dims[0], normalization, activation_name) for _ in range(res_blocks)]
        for prev, width in zip(dims[:-1], dims[1:]):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += _conv_block(prev, width, 3, normalization, activation_name)
        layers.append(nn.Conv2d(dims[-1], 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.net(canvas)


def relation_vectors(pred_vecs: torch.Tensor, triples: torch.Tensor, num_objects: int) -> torch.Tensor:
    """(O, P): for each object the predicate vector of its ``__in_image__`` triple (subject side); zero if none.

    pred_vecs (T, P), triples (T, 3) ``(s, p, o)``; every object is the subject of at most one ``__in_image__``
    triple (the scene-graph format). Sums the masked vectors per subject: exact (one nonzero term per object),
    and no host synchronisation (no boolean-mask indexing).
    """
    sel = (triples[:, 1] == IN_IMAGE).unsqueeze(1)
    masked = torch.where(sel, pred_vecs, torch.zeros_like(pred_vecs))
    return pred_vecs.new_zeros(num_objects, pred_vecs.shape[1]).index_add(0, triples[:, 0], masked)


class PatchSceneGenerator(nn.Module):
    """Scene graph + one patch per real object -> image (the shared generator of RetrieveGAN and PasteGAN).

    forward(objs (O,), triples (T, 3), obj_to_img (O,), num_images N, layout_boxes (O, 4) or None
    [None: predicted], crop_sets: sequence of (O, 3, C, C) patch tensors [image-node rows ignored],
    match_crops: bool) -> dict with ``images`` (list, one (N, 3, S, S) per crop set), ``boxes`` (O, 4)
    predicted, ``obj_vecs`` (O, D) and, when ``match_crops``, ``crop_match`` = (features of the first
    set's patches (R, D_c, h, w), features of crops of the first image at the layout boxes (R, D_c, h, w))
    for PasteGAN's crop-matching loss (``R`` real objects). Every crop set shares one encoding of the graph.
    """

    def __init__(
        self,
        encoder: nn.Module,
        box_net: nn.Module,
        crop_encoder: CropEncoder,
        refiner: CropRefiner,
        fuser: ObjectImageFuser,
        decoder: Decoder,
        crop_size: int,
    ):
        super().__init__()
        self.encoder, self.box_net = encoder, box_net
        self.crop_encoder, self.refiner, self.fuser, self.decoder = crop_encoder, refiner, fuser, decoder
        self.crop_size = crop_size

    def encode(self, objs: torch.Tensor, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obj_vecs (O, D), pred_vecs (T, D), predicted boxes (O, 4))."""
        obj_vecs, pred_vecs = self.encoder(objs, triples)
        return obj_vecs, pred_vecs, self.box_net(obj_vecs)

    def render(
        self,
        crops: torch.Tensor,
        objs: torch.Tensor,
        triples: torch.Tensor,
        obj_to_img: torch.Tensor,
        num_images: int,
        boxes: torch.Tensor,
        obj_vecs: torch.Tensor,
        pred_vecs: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (N, 3, S, S), crop features of the real objects (R, D_c, h, w))."""
        is_image = objs == 0
        real_rows, _ = split_objects(is_image, obj_to_img, num_images)
        feats = self.crop_encoder(crops[real_rows])  # advanced indexing keeps the crops' (channels-last) strides
        maps = feats.new_zeros((objs.shape[0],) + tuple(feats.shape[1:]))
        maps = maps.index_copy(0, real_rows, feats)
        refined = self.refiner(maps, pred_vecs, triples[:, [0, 2]])
        rel = relation_vectors(pred_vecs, triples, objs.shape[0])
        canvas = self.fuser(refined, obj_vecs, rel, boxes, obj_to_img, is_image, num_images)
        return self.decoder(canvas), feats

    def forward(
        self,
        objs: torch.Tensor,
        triples: torch.Tensor,
        obj_to_img: torch.Tensor,
        num_images: int,
        layout_boxes: torch.Tensor | None,
        crop_sets: Sequence[torch.Tensor],
        match_crops: bool = False,
    ) -> dict[str, object]:
        obj_vecs, pred_vecs, boxes_pred = self.encode(objs, triples)
        boxes = boxes_pred if layout_boxes is None else layout_boxes
        images, feats = [], []
        for crops in crop_sets:
            image, feat = self.render(crops, objs, triples, obj_to_img, num_images, boxes, obj_vecs, pred_vecs)
            images.append(image)
            feats.append(feat)
        out: dict[str, object] = {"images": images, "boxes": boxes_pred, "obj_vecs": obj_vecs}
        if match_crops:
            real_rows, _ = split_objects(objs == 0, obj_to_img, num_images)
            generated = crop_boxes(
                images[0], boxes.index_select(0, real_rows), obj_to_img.index_select(0, real_rows), self.crop_size
            )
            out["crop_match"] = (feats[0], self.crop_encoder(generated))
        return out
