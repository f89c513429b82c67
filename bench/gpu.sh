#!/usr/bin/env bash
# One prepared GPU session (issue 17): full-size LTX-2.3 (random weights built on meta, bench/train_step.py
# --model full-2.3), LoRA r32 at 768x448x89 @ 24 fps, 1024 text tokens. Per case: s/step, MFU (the project's
# counted FLOPs), peak memory, saved activations, optimizer state. Cases, most important first:
#   t2v           gradient checkpointing on (the default on GPU)
#   t2v-nockpt    checkpointing off (memory vs speed; an OOM is a result: exit 3, "out of memory")
#   t2v-ckpt2     checkpointing every 2nd block
#   t2v-compile   checkpointing on + torch.compile on every block
#   ic            IC-LoRA, same-size reference, checkpointing on
#   av            t2v + audio (25 tokens/s), LoRA on video+audio+cross-modal targets, checkpointing on
#   scaling       only with 2+ GPUs (nvidia-smi -L): bench/scaling.py training throughput, N GPUs vs 1
# Every case runs under `timeout` (CASE_S, COMPILE_S), and the script stops starting cases once BUDGET_S has
# passed (scaling: SCALING_S), so the whole run fits a 15-minute device window with room to rerun (~6-7 min expected on one H100/H200).
# Output: $OUT/<case>.json (train_step's --json line, or the error), $OUT/<case>.log, and a table on stdout.
#
#   bash bench/gpu.sh             # on the GPU machine, from the repository root (venv active)
#   bash bench/gpu.sh --dry-run   # the same cases on CPU with the tiny model and a small geometry (~1-2 min)
# With RAY_ADDRESS set, the scaling command joins that cluster instead of starting its own (the test suite's head
# node: tests/test_gpu_script.py).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="platform${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 RAY_DISABLE_USAGE_STATS=1

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-bench-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then
  COMMON=(--model tiny --width 256 --height 256 --frames 9 --text-tokens 64 --steps 2 --warmup 1)
  CASE_S=${CASE_S:-120}; COMPILE_S=${COMPILE_S:-240}; SCALING_S=${SCALING_S:-400}; BUDGET_S=${BUDGET_S:-600}
  COMPILE=(--compile --compile-backend aot_eager)  # dynamo + AOT autograd without inductor's C++ build on CPU
  NGPU=0
else
  COMMON=(--model full-2.3 --rank 32 --width 768 --height 448 --frames 89 --text-tokens 1024 --steps 5 --warmup 2)
  CASE_S=${CASE_S:-100}; COMPILE_S=${COMPILE_S:-200}; SCALING_S=${SCALING_S:-180}; BUDGET_S=${BUDGET_S:-420}
  COMPILE=(--compile)
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  nvidia-smi -L || echo "no nvidia-smi: is this the GPU machine?"
fi
echo "bench/gpu.sh: dry_run=$DRY out=$OUT gpus=$NGPU case_limit=${CASE_S}s compile_limit=${COMPILE_S}s budget=${BUDGET_S}s"
START=$SECONDS

run_case() {  # name limit_s args...
  local name=$1 limit=$2; shift 2
  if (( SECONDS - START > BUDGET_S )); then
    echo "{\"case\": \"$name\", \"error\": \"skipped: budget ${BUDGET_S}s spent\"}" > "$OUT/$name.json"
    echo "[$name] skipped (budget spent)"; return
  fi
  echo "[$name] train_step.py ${COMMON[*]} $* (limit ${limit}s)"
  local t0=$SECONDS rc=0
  timeout --signal=KILL "$limit" python bench/train_step.py "${COMMON[@]}" "$@" --json \
      > "$OUT/$name.log" 2>&1 || rc=$?
  local last; last=$(grep '^{' "$OUT/$name.log" | tail -1)
  if [ -n "$last" ]; then
    echo "$last" | python -c 'import json,sys; r=json.load(sys.stdin); r["case"]=sys.argv[1]; print(json.dumps(r))' \
        "$name" > "$OUT/$name.json"
  else
    echo "{\"case\": \"$name\", \"error\": \"rc=$rc (124/137: over ${limit}s)\", \"wall_s\": $((SECONDS - t0))}" \
        > "$OUT/$name.json"
  fi
  echo "[$name] rc=$rc in $((SECONDS - t0)) s"
}

run_case t2v         "$CASE_S"    --grad-ckpt
run_case t2v-nockpt  "$CASE_S"
run_case t2v-ckpt2   "$CASE_S"    --ckpt-every 2
run_case t2v-compile "$COMPILE_S" --grad-ckpt "${COMPILE[@]}"
run_case ic          "$CASE_S"    --grad-ckpt --ic-lora
run_case av          "$CASE_S"    --grad-ckpt --audio --targets av

if [ "$NGPU" -gt 1 ] || [ "$DRY" = 1 ]; then
  # Training throughput through Ray Train (FSDP2 from 2 workers) on N GPUs vs 1; the dry run checks the command
  # with one CPU worker. scaling.py trains the tiny model (it needs a folder with the VAE and text encoder).
  # the dry run: short, small clips and a small geometry (the command and its paths, not the figures)
  if [ "$DRY" = 1 ]; then
    SCALING=(--workers 1 --steps 6 --log-every 2 --seconds 0.5 --width 256 --height 160 --frames 9)
  else
    SCALING=(--workers "1,$NGPU" --steps 40)
  fi
  if (( SECONDS - START <= BUDGET_S )); then
    echo "[scaling] scaling.py ${SCALING[*]} --skip-preprocess --clips 2 --warmup 2"
    timeout --signal=KILL "$SCALING_S" python bench/scaling.py "${SCALING[@]}" --skip-preprocess --clips 2 \
        --warmup 2 > "$OUT/scaling.log" 2>&1; echo "[scaling] rc=$?"
  else
    echo "[scaling] skipped (budget spent)"
  fi
fi

python - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print(f"\n{'case':<12} {'s/step med':>10} {'min':>8} {'MFU':>6} {'TFLOP/step':>10} {'peak GiB':>9} "
      f"{'acts MiB':>9} {'opt MiB':>8}  note")
for path in sorted(glob.glob(os.path.join(out, "*.json")), key=os.path.getmtime):
    r = json.load(open(path))
    if "error" in r:
        print(f"{r.get('case', '?'):<12} {r['error']}")
        continue
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    acts = "-" if r.get("saved_activations_gib") is None else f"{1024 * r['saved_activations_gib']:.1f}"
    print(f"{r['case']:<12} {r['step_s_median']:>10.3f} {r['step_s_min']:>8.3f} {mfu:>6} {r['step_tflop']:>10.4g} "
          f"{r['peak_mem_gib']:>9.2f} {acts:>9} {r['optimizer_state_mib']:>8.1f}  {r['device']}, "
          f"seq {r['sequence_video']}+{r['audio_tokens']} audio")
scaling = os.path.join(out, "scaling.log")
if os.path.exists(scaling):
    print("\nscaling.py:\n" + "".join(l for l in open(scaling) if l.startswith(("train", "RESULT", "preprocess"))))
EOF
echo "bench/gpu.sh done in $((SECONDS - START)) s; results in $OUT"
