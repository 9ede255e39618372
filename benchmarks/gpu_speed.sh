#!/usr/bin/env bash
# ResNet-50 at 224 px on one GPU: unseen's trainer against the bare loop, fp32 vs bf16 + channels_last (+ compile).
# Run from the repository root: PYTHONPATH=src bash benchmarks/gpu_speed.sh   (about 5 minutes on one H100)
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
common=(--cases resnet50 --device cuda --resnet-batch 32x4 --resnet-steps 20 --rounds 3)
python benchmarks/train_speed.py "${common[@]}"
python benchmarks/train_speed.py "${common[@]}" --precision bf16 --channels-last
python benchmarks/train_speed.py "${common[@]}" --precision bf16 --channels-last --compile
