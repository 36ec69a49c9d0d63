"""Tiny layout2im / DAMSM / AttnGAN configurations for the baseline tests (32 px fixture data)."""

from __future__ import annotations

from typing import Any

TINY_LAYOUT2IM: dict[str, Any] = {
    "embedding_dim": 4,
    "z_dim": 4,
    "crop_size": 8,
    "crop_encoder_dims": [4, 8],  # 8 px crops -> 4 x 4
    "layout_encoder_dims": [4, 8, 8],  # 32 px -> 8 x 8
    "clstm_dims": [8],
    "clstm_kernel": 3,
    "res_blocks": 1,
    "decoder_dims": [8, 8, 4],
    "d_img_dims": [4, 8, 8],
    "d_obj_dims": [4, 8],
    "optim_generator": {"lr": 1e-3, "betas": [0.5, 0.999]},
    "optim_d_img": {"lr": 1e-3, "betas": [0.5, 0.999]},
    "optim_d_obj": {"lr": 1e-3, "betas": [0.5, 0.999]},
}

TINY_DAMSM: dict[str, Any] = {
    "image_encoder": "cnn",
    "cnn_channels": [8, 8, 8],  # 32 px -> regions 8 x 8
    "embed_dim": 8,
    "word_dim": 8,
    "batch_size": 8,
    "epochs": 8,
    "eval_batches": 2,
    "log_every": 5,
    "device": "cpu",
}

TINY_ATTNGAN: dict[str, Any] = {
    "stages": 2,  # 16 -> 32 px
    "gf_dim": 4,
    "df_dim": 4,
    "z_dim": 4,
    "condition_dim": 4,
    "r_num": 1,
    # AttnGAN's Adam settings (lr 2e-4): at 1e-3 Adam's first step overshoots on the DAMSM term
}
