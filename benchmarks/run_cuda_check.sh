#!/usr/bin/env bash
# The device side of benchmarks/prepare_cuda_check.sh: one call per part.
#
#   bash benchmarks/run_cuda_check.sh .cuda-check/parts/payload.part-NN
#
# Each call puts its part aside in $STORE (outside the checkout, kept while the machine stays warm). The call that
# completes the set checks the payload's sha256, installs the wheels into $STORE/site (no index, no network),
# points the loader at the CUDA/cuDNN libraries of the image's NVIDIA wheels and runs benchmarks/check_cuda.py:
# its JSON goes to stdout and to $OUT/cuda_check.json. A later call with any part runs the check again.
# CHECK_ARGS adds arguments (e.g. --dry-run, for a rehearsal on a CPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
part=$1
manifest=$(dirname "$(dirname "$part")")/manifest
store=${STORE:-/tmp/cuda-check}
out=${OUT:-$store/out}
py=${PYTHON:-python3}
mkdir -p "$store/parts" "$out"
# shellcheck disable=SC1090
source "$manifest"  # PARTS, SHA256, BYTES

cp "$part" "$store/parts/"
have=$(find "$store/parts" -name 'payload.part-*' | wc -l)
echo "run_cuda_check: $(basename "$part") put aside: $have of $PARTS parts on this machine"
if [ "$have" -lt "$PARTS" ]; then
  missing=$(for i in $(seq 0 $((PARTS - 1))); do
    f=$(printf 'payload.part-%02d' "$i")
    [ -f "$store/parts/$f" ] || printf '%s ' "$f"
  done)
  echo "run_cuda_check: still to send: $missing"
  exit 0
fi

if [ ! -f "$store/ready" ]; then
  cat "$store"/parts/payload.part-* >"$store/payload.tar"
  sum=$(sha256sum "$store/payload.tar" | cut -d' ' -f1)
  if [ "$sum" != "$SHA256" ]; then
    echo "run_cuda_check: error: the parts do not add up to the payload (sha256 $sum, expected $SHA256)" >&2
    rm -f "$store/payload.tar"
    exit 2
  fi
  rm -rf "$store/payload" "$store/site"
  mkdir -p "$store/payload" "$store/site/emotion_monitor"
  tar -xf "$store/payload.tar" -C "$store/payload"
  rm "$store/payload.tar"
  "$py" -c "import sys, tarfile; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2], filter='data')" \
    "$store/payload/models.tar.xz" "$store"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$store/site" \
    "$store"/payload/wheels/*.whl
  touch "$store/ready"
fi
# This checkout's packages as installed (emotion_monitor.<folder>, a namespace package), fresh on every call.
for folder in core export realtime configs; do
  ln -sfn "$(pwd)/$folder" "$store/site/emotion_monitor/$folder"
done
export PYTHONPATH="$store/site"
# CUDA 13 and cuDNN 9 from the image's NVIDIA wheels (nvidia/cu13/lib, nvidia/cudnn/lib, ...).
nvidia_libs=$("$py" -c "
import glob, os, site
dirs = [d for s in site.getsitepackages() for d in sorted(glob.glob(os.path.join(s, 'nvidia', '*', 'lib')))]
print(':'.join(dirs))")
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$py" -c "import onnxruntime as o; print('run_cuda_check: onnxruntime', o.__version__, o.__file__, o.get_available_providers())"
# shellcheck disable=SC2086
"$py" benchmarks/check_cuda.py --model "$store/models/model.onnx" --fp16 "$store/models/model.fp16.onnx" \
  --clips "$store/payload/clips" --out "$out/cuda_check.json" ${CHECK_ARGS:-}
