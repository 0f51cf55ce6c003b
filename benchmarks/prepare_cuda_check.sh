#!/usr/bin/env bash
# Prepares benchmarks/check_cuda.py's device call, on this (CPU) machine: everything a fresh GPU machine without
# network needs, cut into parts that each fit one call of the device tool (64 MiB with the working tree).
#
#   bash benchmarks/prepare_cuda_check.sh        # then run the commands it prints, back to back
#
# What goes in .cuda-check/ (git-ignored):
#   payload: wheels/ (onnxruntime-gpu and the runtime's compiled dependencies for the device's Python),
#            models.tar.xz (the default model, fp32, and its float16 copy), clips/ (real RAVDESS clips)
#   parts/payload.part-NN: the payload cut to fit; manifest: how many parts and the payload's sha256
# The device's own image already holds CUDA 13 and cuDNN 9 (NVIDIA's pip wheels, beside PyTorch), numpy, onnx
# and tqdm; benchmarks/run_cuda_check.sh puts each part aside on the device and runs the check with the last.
#
# Environment: PYVER (the device's Python, default 3.12), ORT_GPU (default onnxruntime-gpu==1.31.1: CUDA 13),
# CLIPS (default 50), EMOTION_DATA_DIR (default ../shared/data), LIMIT_MIB (a call's limit, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
pyver=${PYVER:-3.12}
ort_gpu=${ORT_GPU:-onnxruntime-gpu==1.31.1}
clips=${CLIPS:-50}
limit_mib=${LIMIT_MIB:-64}
data=${EMOTION_DATA_DIR:-../shared/data}
dir=.cuda-check

rm -rf "$dir"
mkdir -p "$dir/payload/wheels" "$dir/payload/clips" "$dir/models" "$dir/parts"

echo "1/4 wheels for Python $pyver (x86-64)" >&2
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dir/payload/wheels" \
  "$ort_gpu" soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0

echo "2/4 the default model, fp32 and fp16" >&2
model=$("$py" -c "from emotion_monitor.realtime.model_store import resolve_model_path; print(resolve_model_path(None))")
cp "$model" "$dir/models/model.onnx"
"$py" -c "from emotion_monitor.export.quantize import convert_fp16; convert_fp16('$dir/models/model.onnx', '$dir/models/model.fp16.onnx')"
tar -C "$dir" -cf - models | xz -T2 -6 >"$dir/payload/models.tar.xz"
rm -rf "$dir/models"

echo "3/4 $clips RAVDESS clips from $data" >&2
"$py" - "$data/ravdess-16k" "$dir/payload/clips" "$clips" <<'EOF'
import shutil, sys
from pathlib import Path
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = sorted(src.glob("Actor_*/*.flac"))
if len(files) < n:
    sys.exit(f"prepare_cuda_check: {src}: {len(files)} clips, {n} needed (set EMOTION_DATA_DIR)")
for f in files[:: len(files) // n][:n]:  # every k-th: all actors, all emotions
    shutil.copy(f, dst / f.name)
EOF

echo "4/4 parts" >&2
tar -C "$dir/payload" -cf "$dir/payload.tar" .
rm -rf "$dir/payload"
# What travels with every call besides the part: tracked and untracked-but-not-ignored files, and shared/.
tree_bytes=$("$py" - <<'EOF'
import os, subprocess
names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
total = sum(os.path.getsize(n) for n in names if n and os.path.isfile(n))
for root, _, files in os.walk("shared"):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
print(total)
EOF
)
part_bytes=$(( limit_mib * 1048576 - tree_bytes - 4 * 1048576 ))  # 4 MiB to spare (the manifest, later edits)
if [ "$part_bytes" -lt 8388608 ]; then
  echo "prepare_cuda_check: the working tree alone is $((tree_bytes / 1048576)) MiB; no room for parts" >&2
  exit 1
fi
split -b "$part_bytes" -d -a 2 "$dir/payload.tar" "$dir/parts/payload.part-"
parts=$(ls "$dir/parts" | wc -l)
{
  echo "PARTS=$parts"
  echo "SHA256=$(sha256sum "$dir/payload.tar" | cut -d' ' -f1)"
  echo "BYTES=$(stat -c %s "$dir/payload.tar")"
} >"$dir/manifest"
rm "$dir/payload.tar"

echo "payload $(( $(grep BYTES "$dir/manifest" | cut -d= -f2) / 1048576 )) MiB in $parts parts of at most" \
  "$((part_bytes / 1048576)) MiB (working tree $((tree_bytes / 1048576)) MiB)." >&2
echo "Run these device calls back to back (the machine is given back after 30 s idle; a lost machine loses the"
echo "parts it held, and the last call then names the missing ones to send again). The last one runs the check"
echo "(about 3 minutes) and returns \$OUT/cuda_check.json:"
for part in "$dir"/parts/payload.part-*; do
  echo "  run(command=\"bash benchmarks/run_cuda_check.sh $part\", carry=[\"$part\", \"$dir/manifest\"], timeout_s=540)"
done
