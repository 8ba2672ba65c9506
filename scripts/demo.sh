#!/usr/bin/env bash
# Set up (if needed), then the main job on the bundled SYNTHETIC sample: draw, prepare, load, train, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
rm -rf sample outputs/demo
.venv/bin/hmu-crc sample --output-dir sample --kather
.venv/bin/hmu-crc prepare --data-dir sample --output-dir hmu_crc_hist550k --num-proc 2
.venv/bin/hmu-crc describe hmu_crc_hist550k
.venv/bin/python train_hf.py --config configs/demo.yaml
.venv/bin/hmu-crc evaluate --model outputs/demo --dataset hmu_crc_hist550k --output-dir outputs/demo/evaluation
echo "Model: outputs/demo  Metrics and pictures: outputs/demo/evaluation (and outputs/demo/*_metrics.json)"
