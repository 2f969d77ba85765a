#!/usr/bin/env bash
# The first thing to run on a machine with a GPU (about ten minutes):
#   bash bench/gpu_check.sh [DATASET_ROOT]        # default ../shared/datasets
# 1. the device-switched core of the test suite on the GPU (every sampler's runs on coat, interrupt and
#    resume, CNSDiff, end to end, and the read-back check of every sampler's batch, there also with torch's own
#    detector, torch.cuda.set_sync_debug_mode), 2. `python main.py` on coat with device=cuda, 3. bench_epoch on
#    Food. Everything it prints goes to results/gpu/<GPU name>/ (commit that folder, with the
#    GPU named); a step that fails is reported and the script goes on to the next.
set -u
cd "$(dirname "$0")/.."
root=${1:-../shared/datasets}
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2
    exit 2
fi
gpu=$(python -c "import torch, re; print(re.sub(r'[^A-Za-z0-9.-]+', '_', torch.cuda.get_device_name(0)))")
out=results/gpu/$gpu
mkdir -p "$out"
status=0
step() {  # step NAME COMMAND...: run, keep its output in $out/NAME.txt, note failure
    local name=$1; shift
    echo "== $name: $*" | tee "$out/$name.txt"
    local t0=$SECONDS
    if "$@" >> "$out/$name.txt" 2>&1; then
        echo "   ok ($((SECONDS - t0)) s)" | tee -a "$out/$name.txt"
    else
        echo "   FAILED ($((SECONDS - t0)) s): see $out/$name.txt" | tee -a "$out/$name.txt"
        tail -20 "$out/$name.txt"
        status=1
    fi
}
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" > "$out/device.txt"
step tests env CNSDIFF_TEST_DEVICE=cuda python -m pytest -q -x tests/test_gpu_path.py tests/test_samplers.py \
    tests/test_cnsdiff.py tests/test_adar.py tests/test_lightgcn.py tests/test_robust.py tests/test_end_to_end.py
step main python main.py --set dataset=coat --set dataset.root="$root" --set device=cuda --set max.epoch=3 \
    --set output="$out/main" --set log.dir="$out/main/log"
step bench_epoch python -m bench.bench_epoch --dataset-root "$root" --device cuda --repeats 3 --out "$out/bench"
echo "gpu_check: results in $out (exit $status)"
exit $status
