#!/usr/bin/env bash
# Every GPU figure owed in documentation/benchmarks.md, in one command, on a machine with one CUDA GPU:
#   bash benchmarks/run_gpu_benchmarks.sh OUTDIR [backbones|training|prediction|methods|matrices ...]
# Each part writes JSON + Markdown tables into OUTDIR; paste them into documentation/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: run_gpu_benchmarks.sh OUTDIR [part ...]}; shift || true
parts=${*:-backbones training prediction methods matrices}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
for part in $parts; do
  case $part in
    backbones)
      $PY benchmarks/backbone_speed.py --out "$out/backbone_speed.json" --compile ;;
    training)
      $PY benchmarks/train_speed.py --out "$out/train_speed.json"
      $PY benchmarks/train_speed.py --out "$out/train_speed_cached.json" --augmentation none --embedding-cache memory ;;
    prediction)
      $PY benchmarks/predict_speed.py --out "$out/predict_speed.json" ;;
    methods)
      $PY benchmarks/method_step_speed.py --method desam --variant litemedsam --batch-size 8 --out "$out/desam_litemedsam.json"
      $PY benchmarks/method_step_speed.py --method desam --variant vit_b --batch-size 8 --out "$out/desam_vit_b.json"
      for size in 384 1024; do
        $PY benchmarks/method_step_speed.py --method dapsam --variant vit_b --input-size $size --batch-size 8 \
            --out "$out/dapsam_vit_b_$size.json"
      done
      $PY benchmarks/method_step_speed.py --method dbsam --variant litemedsam --batch-size 8 --out "$out/dbsam_litemedsam.json"
      $PY benchmarks/method_step_speed.py --method dbsam --variant vit_b --batch-size 8 --out "$out/dbsam_vit_b.json"
      $PY benchmarks/method_step_speed.py --method dbsam --variant vit_b --batch-size 8 \
          --setting gradient_checkpointing=true --out "$out/dbsam_vit_b_ckpt.json" ;;
    matrices)
      export SAMDG_raw="$out/raw" SAMDG_preprocessed="$out/preprocessed" SAMDG_results="$out/results"
      [ -f "$SAMDG_raw/Dataset901_Synthetic/dataset.json" ] || samdg_make_synthetic -d 901
      samdg_plan_and_preprocess -d 901 --variant litemedsam --no_pbar
      for method in sam desam dapsam dbsam; do
        samdg_benchmark -d 901 -m $method --protocol single-source --epochs 20 --iters-per-epoch 100 --device cuda
        cp "$SAMDG_results/Dataset901_Synthetic/benchmark__${method}__single-source/matrix.md" "$out/matrix_$method.md"
      done ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
echo "results in $out"
