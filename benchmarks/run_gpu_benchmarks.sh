#!/usr/bin/env bash
# Every GPU figure owed in documentation/benchmarks.md, in one command, on a machine with one CUDA GPU:
#   bash benchmarks/run_gpu_benchmarks.sh OUTDIR [methods|training|prediction|backbones|matrices ...]
# Each step writes JSON + Markdown tables into OUTDIR; paste them into documentation/benchmarks.md.
#
# Sized for a lent GPU with a few minutes of device time: the default parts (methods, training, prediction,
# backbones) run in that order, owed figures first, within SAMDG_GPU_BUDGET_S seconds (default 420). Each step
# gets at most the time left (and at most SAMDG_GPU_STEP_S, default 150); a step that fails or runs out of time is
# listed at the end and the next one starts, so one failure never costs the others. `matrices` (the cross-domain
# benchmarks, tens of minutes) runs only when named.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: run_gpu_benchmarks.sh OUTDIR [part ...]}; shift || true
parts=${*:-methods training prediction backbones}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
budget=${SAMDG_GPU_BUDGET_S:-420}
step_limit=${SAMDG_GPU_STEP_S:-150}
failed=()

step() {  # step NAME COMMAND...: run with the time left, record failures, never abort the whole run
  local name=$1; shift
  local left=$((budget - SECONDS))
  if ((left < 20)); then failed+=("$name (no time left)"); return; fi
  ((left > step_limit)) && left=$step_limit
  echo "== $name (at ${SECONDS}s, limit ${left}s)"
  timeout "$left" "$@" || failed+=("$name (exit $?)")
}

method_step() {  # method_step METHOD VARIANT [extra args...]: one training step's speed and memory
  local method=$1 variant=$2; shift 2
  local extra; extra=$(echo "$*" | sed -E 's/--setting //g; s/--input-size /px/g; s/[^a-zA-Z0-9=]+/_/g; s/^_|_$//g')
  local tag="${method}_${variant}${extra:+_$extra}"
  step "$tag" $PY benchmarks/method_step_speed.py --method "$method" --variant "$variant" --batch-size 8 \
      --warmup 3 --steps 10 --out "$out/$tag.json" "$@"
}

for part in $parts; do
  case $part in
    methods)
      method_step dbsam litemedsam
      method_step dbsam vit_b
      method_step dbsam vit_b --setting gradient_checkpointing=true
      method_step dbsam litemedsam --setting prompt=box
      method_step espmedsam litemedsam
      method_step espmedsam litemedsam --setting stage=distill
      method_step desam litemedsam
      method_step desam vit_b
      method_step dapsam vit_b --input-size 384
      method_step dapsam vit_b --input-size 1024 ;;
    training)
      step train_speed $PY benchmarks/train_speed.py --out "$out/train_speed.json" --epochs 2 --iters-per-epoch 50
      step train_speed_cached $PY benchmarks/train_speed.py --out "$out/train_speed_cached.json" --epochs 2 \
          --iters-per-epoch 50 --augmentation none --embedding-cache memory ;;
    prediction)
      step predict_speed $PY benchmarks/predict_speed.py --out "$out/predict_speed.json" --volumes 4 ;;
    backbones)
      step backbone_speed $PY benchmarks/backbone_speed.py --out "$out/backbone_speed.json" --compile ;;
    matrices)
      export SAMDG_raw="$out/raw" SAMDG_preprocessed="$out/preprocessed" SAMDG_results="$out/results"
      [ -f "$SAMDG_raw/Dataset901_Synthetic/dataset.json" ] || $PY -m dataset_conversion.synthetic -d 901
      $PY -m samdg.cli.plan_and_preprocess -d 901 --variant litemedsam --no_pbar
      for method in sam desam dapsam dbsam espmedsam; do
        $PY -m samdg.cli.benchmark -d 901 -m $method --protocol single-source --epochs 20 --iters-per-epoch 100 \
            --device cuda \
          && cp "$SAMDG_results/Dataset901_Synthetic/benchmark__${method}__single-source/matrix.md" \
                "$out/matrix_$method.md" || failed+=("matrix $method")
      done ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
echo "results in $out after ${SECONDS}s"
if ((${#failed[@]})); then printf 'not finished: %s\n' "${failed[@]}"; exit 1; fi
