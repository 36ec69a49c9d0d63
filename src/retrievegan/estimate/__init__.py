"""Paper-scale compute estimate (``retrievegan paper-estimate``): projected GPU-hours of the paper's Tables 1 and 2.

For every training run the paper's tables need — Table 1: sg2im, AttnGAN (+ its DAMSM pre-training),
layout2im, PasteGAN and RetrieveGAN on COCO-Stuff and on Visual Genome; Table 2: the four RetrieveGAN variants
on COCO-Stuff — under a paper config (``config/paper-{coco,vg}.yaml`` merged onto ``config/config.yaml`` as
Snakemake merges ``--configfile`` layers; each method section's ``train:`` overrides merged onto ``train`` as
``train_json`` in ``workflow/rules/common.smk`` does; the RetrieveGAN variants get the ``retrieval`` section and
their ablation switches as ``workflow/rules/retrievegan.smk`` does):

1. the method is built through the training code itself (``train.registry.create_method`` +
   ``train.loop.Trainer``) with the paper config's widths and image size, on a synthetic batch at paper scale:
   the method's global batch, real objects per image drawn uniformly from the dataset's range (COCO-Stuff 3-8,
   Visual Genome 3-9 + ``__image__``), vocab sizes from the paper's dataset statistics, and the method's
   required input arrays (patch bank, pre-filter candidates, patch features, co-occurrence embeddings) written
   at paper dimensions into a temporary folder (sparse ``.npy`` files: only their shapes and the rows the
   batch reads matter);
2. the FLOPs of one full training step (``Trainer.train_step``: generator forward + backward + Adam, then
   discriminator forward + backward + Adam) at the paper batch are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on real tensors (matmul / convolution / attention FLOPs,
   forward and backward, ``2 x`` multiply-adds; element-wise ops, normalisation and the optimiser are not
   counted — the usual model-FLOP convention);
3. a few real steps are timed on this CPU (``warmup_steps`` + ``timed_steps``), at ``timing_batch_size``
   images (the first images of the same synthetic batch) when the paper batch is too slow; the median time
   is scaled to the paper batch by the FLOP ratio of the two batches (= the image ratio for per-image work);
4. total steps come from the paper config's schedule (``steps``; DAMSM: ``epochs x floor(train / batch)``);
5. projected GPU-hours = total FLOPs / (peak FLOP/s x model FLOP utilisation) for the configured reference GPU,
   a range over the configured utilisation interval, at the FP32 and the TF32 (tensor core) peak; the CPU-hours
   implied by the measured step time are a sanity number.

Sampling (two samples per test scene graph and setting the tables need, forward only, counted on the method's
batch and divided by its images) and evaluation (FID / IS Inception-v3 at 299 px on sample0, LPIPS AlexNet on the
sample pairs, the real-image statistics once per dataset) are estimated too.

**Random weights.** Frozen pretrained networks that only enter a loss — the VGG-19 of the perceptual loss,
AttnGAN's DAMSM encoders (ImageNet Inception-v3 trunk) — are built here with random weights from an explicit
generator: they are only timed and FLOP-counted, never used for a result, and the output says so. Nothing of
this touches the training path: training still loads the real weights or fails with a clear message.

Modules (split by concern): ``config`` (the ``estimate`` section), ``flops`` (FLOP counting and the GPU-hour
arithmetic), ``paper`` (paper configs, synthetic data and inputs at their scale, random-weight stand-ins),
``measure`` (CPU timing scaled by FLOPs; measured CUDA steps per precision mode), ``report`` (totals,
Markdown), ``run`` (the stage).
"""

from __future__ import annotations

from retrievegan.estimate.config import EstimateConfig, estimate_config
from retrievegan.estimate.flops import (
    count_flops,
    evaluation_flops_per_image,
    gpu_hour_range,
    gpu_hours,
    gpu_note,
    steps_from_epochs,
)
from retrievegan.estimate.paper import (
    DatasetScale,
    dataset_scale,
    install_random_perceptual,
    load_paper_config,
    random_damsm,
    read_dataset_stats,
    synthetic_items,
    synthetic_spec,
    write_inputs,
)
from retrievegan.estimate.report import render_markdown, table_totals
from retrievegan.estimate.run import estimate_dataset, run_estimate

__all__ = [
    "DatasetScale",
    "EstimateConfig",
    "count_flops",
    "dataset_scale",
    "estimate_config",
    "estimate_dataset",
    "evaluation_flops_per_image",
    "gpu_hour_range",
    "gpu_hours",
    "gpu_note",
    "install_random_perceptual",
    "load_paper_config",
    "random_damsm",
    "read_dataset_stats",
    "render_markdown",
    "run_estimate",
    "steps_from_epochs",
    "synthetic_items",
    "synthetic_spec",
    "table_totals",
    "write_inputs",
]
