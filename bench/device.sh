#!/usr/bin/env bash
# The GPU throughput set of issue 12, on a lent GPU machine (the `device` tool's `run`), whose
# image has CUDA torch, transformers and httpx but not diffusers, compel, Starlette, uvicorn,
# pydantic or SQLAlchemy: those travel as wheels in .whl/ (ignored by git).
#
#   here, once:   bench/device.sh wheels          (downloads .whl/ for the machine's Python 3.12)
#   there:        bench/device.sh small|sd15|sdxl  (run with carry [".whl"], timeout_s 600)
#
#   small  the CPU bench's settings on the GPU: tiny and sd15, 128 px, 10 steps, N 8 and 32
#   sd15   full-size SD 1.5 at 512 px, 25 steps, N 8: batched img/s and (e), the single-image
#          latency end to end
#   sdxl   full-size SDXL at 1024 px, 30 steps, N 8 (builds its ~7 GB of random weights first)
#
# Each part prints the bench's table and leaves its log in $OUT. Random weights are built on the
# GPU into /tmp/bench-models (a fresh machine has none); `sdxl` alone takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(  # what the machine's image lacks, at the versions the project pins or runs here
  diffusers==0.42.1 transformers==5.24.0 compel==2.5.1 starlette==1.10.0 uvicorn==0.54.0
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 SQLAlchemy==2.1.9 ftfy==6.3.1 wcwidth==0.9.4 regex==2026.11.19
)

part="${1:-}"
if [ "$part" = wheels ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  rm -rf .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${PACKAGES[@]}"
  du -sh .whl
  exit 0
fi
case "$part" in small|sd15|sdxl) ;; *) echo "usage: $0 wheels|small|sd15|sdxl" >&2; exit 2;; esac

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers, kiln.cli, kiln.engine; print('torch', \
torch.__version__, torch.cuda.get_device_name(0), '| diffusers', diffusers.__version__, \
'| transformers', transformers.__version__)"

bench() {  # bench LOG ARGS...: the throughput bench on CUDA, its output kept in $OUT/LOG
  local log="$1"; shift
  python3 bench/throughput.py --device cuda --threads 8 --models-dir /tmp/bench-models "$@" \
    2>&1 | grep -v '^\[transformers\]' | tee "$OUT/$log"
}
case "$part" in
  small) bench small.log --models tiny sd15 --n 8 32 --size 128 --steps 10 --repeats 2 ;;
  sd15) bench sd15-512.log --models sd15 --n 8 --size 512 --steps 25 --repeats 2 ;;
  sdxl) bench sdxl-1024.log --models sdxl --n 8 --size 1024 --steps 30 --repeats 1 ;;
esac
