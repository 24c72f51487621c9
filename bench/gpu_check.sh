#!/usr/bin/env bash
# The GPU checks of issues 6, 7 and 13, as one script for a GPU machine (an H200 here):
#   1. FSDP2 training that grows (depth, then width) on the GPU: sharded milestones, async
#      sharded saves, then the reload of the grown milestone;
#   2. the async-save stall on GPU (state copied to host memory in the background);
#   3. tokens/s and model FLOP utilisation at the ~100M config, bf16.
# Usage, from the repo root, with dimba installed: bash bench/gpu_check.sh [OUT_DIR]
# Every result lands in OUT_DIR (default: gpu_check/) as JSON or a log.
set -uo pipefail
OUT="${1:-gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1

# 1. FSDP2: ~100M model grown to ~300M (depth 12 -> 16 at step 5, width 1024 -> 1536 at step 10),
#    milestones at the start and after each growth, written in the background; then reload.
timeout 300 "$PY" train.py trainer=fsdp trainer.devices=1 objective=diffusion \
  model.d_model=1024 model.n_layers=12 model.chunk_size=128 data.seq_len=512 data.batch_size=8 \
  'growth.schedule=[{step:5,op:depth,n_layers:16},{step:10,op:width,d_model:1536}]' \
  trainer.max_steps=20 trainer.val_check_interval=20 trainer.enable_progress_bar=false \
  progressive_checkpoints.async_save=true 'progressive_checkpoints.milestones=[50M,150M,300M]' \
  hydra.run.dir="$OUT/fsdp_run" > "$OUT/fsdp_train.log" 2>&1
echo "fsdp train rc=$?" >> "$OUT/summary.txt"
timeout 120 "$PY" - "$OUT" >> "$OUT/summary.txt" 2>&1 <<'PYEOF'
import json, sys, time
from pathlib import Path
import dimba
out = Path(sys.argv[1])
ckpt = max((out / "fsdp_run" / "progressive_checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
sidecar = json.loads(ckpt.with_suffix(".json").read_text())
start = time.perf_counter()
model = dimba.load_model(ckpt)
print(json.dumps({"fsdp_milestone": str(ckpt), "is_dir": ckpt.is_dir(), "format": sidecar.get("checkpoint_format"),
                  "size_bytes": sidecar["size_bytes"], "reload_s": time.perf_counter() - start,
                  "params": sum(p.numel() for p in model.parameters())}))
PYEOF

# 2. Async against sync milestone saves on the GPU (one file, then FSDP2's sharded directory).
timeout 400 "$PY" bench/save_stall.py --accelerator gpu --repeats 3 > "$OUT/save_stall_gpu.json" 2> "$OUT/save_stall_gpu.log"
echo "save_stall rc=$?" >> "$OUT/summary.txt"

# 3. Throughput and MFU at the ~100M config (bf16 autocast; then with torch.compile).
timeout 300 "$PY" bench/throughput.py --config 100m --device cuda --variants bf16 --steps 10 --hook-calls 0 \
  > "$OUT/throughput_100m_bf16.json" 2> "$OUT/throughput_100m_bf16.log"
echo "throughput rc=$?" >> "$OUT/summary.txt"
timeout 400 "$PY" bench/throughput.py --config 100m --device cuda --variants bf16+compile --steps 10 --hook-calls 0 \
  > "$OUT/throughput_100m_bf16_compile.json" 2> "$OUT/throughput_100m_bf16_compile.log"
echo "throughput compile rc=$?" >> "$OUT/summary.txt"
# mamba-ssm's kernels, where the package is installed on this machine.
"$PY" -m pytest -q tests/test_fused_kernels.py > "$OUT/fused_kernels.log" 2>&1
echo "fused kernel tests rc=$?" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
