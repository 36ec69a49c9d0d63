#!/usr/bin/env bash
# The GPU checks of issue 13 in one command, for a machine with a GPU (target: under 6 minutes on one H100/H200):
# AMP bf16 / fp16 of every method, torch.compile (graph breaks, CUDA graphs), kill-and-resume on CUDA with
# `deterministic: true`, DDP over NCCL (with >= 2 GPUs), and the measured paper estimate
# (`retrievegan paper-estimate --device cuda`) -> results/benchmarks/gpu_check.{json,md} and gpu_estimate/.
#
# Needs only the PyTorch stack (python3 with torch + numpy; torchvision for the paper estimate): no install, no
# network, no pytest / PyYAML / tqdm / Snakemake (configs come from benchmarks/gpu_configs/*.json without PyYAML).
#   benchmarks/gpu_check.sh                      # everything
#   benchmarks/gpu_check.sh --only amp,compile   # a subset
#   benchmarks/gpu_check.sh --device cpu --quick # a dry run of the script on a CPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$PYTHON" -m benchmarks.gpu_check "$@"
