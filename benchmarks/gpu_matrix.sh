#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md in one go: one JSON file per run in OUTDIR.
#
#   benchmarks/gpu_matrix.sh OUTDIR                          # CUDA, 480x854, 16 frames, 20 steps, no CFG
#   DEVICE=cpu SIZE=32x32 FRAMES=4 STEPS=2 benchmarks/gpu_matrix.sh /tmp/dry   # a dry run of the same commands
#
# Runs, in this order (cheapest first, so a cut-off run still leaves the rows that matter):
#   device_check.json      device_check: the whole job with a tiny model on DEVICE vs the CPU (does the device path run?)
#   networks.json          bench_networks: UNet (16 tiles) and VAE tile, contiguous vs channels-last, compiled
#   networks_b64.json      the same at 64 tiles per call: does memory.MAX_BATCH = 16 lose throughput?
#   pipeline.json          bench_pipeline at SIZE, default tiles (the issue's target row)
#   stream.json            bench_pipeline --model stream-diffvsr at SIZE, its own defaults (4 steps): the fast mode
#   pipeline_untiled.json  the same as pipeline.json, --tile 0 (the floor without tile overlap)
#   pipeline_compile.json  the same as pipeline.json with --compile (a warm-up run compiles)
#   host.json              bench_host at SIZE with the accelerator time measured in pipeline.json
#   host_stream.json       bench_host --kind sequential at SIZE with the GPU time per frame measured in stream.json
#   stablevsr.json         bench_pipeline --model stablevsr at SIZE, default tiles (its own defaults but STEPS)
#   mgld.json              bench_pipeline --model mgld-vsr --flops-only at SIZE: counted FLOPs (no timed run is instrumented)
#   uav.json               bench_pipeline --model upscale-a-video --flops-only at SIZE: the same
# Each run's stderr goes to NAME.err beside it. Needs the project's dependencies importable (on the
# workplace's lent GPU machines diffusers and av are missing: carry them as wheels first).
set -uo pipefail

out=${1:?usage: gpu_matrix.sh OUTDIR}
device=${DEVICE:-cuda}
size=${SIZE:-480x854}
frames=${FRAMES:-16}
steps=${STEPS:-20}
tile=${TILE:-128}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"  # vsrup from this checkout, installed or not

run() {  # NAME COMMAND...: keep going when one run fails, and say so
    local name=$1
    shift
    echo "== $name: $*" >&2
    if ! "$@" >"$out/$name.json" 2>"$out/$name.err"; then
        echo "== $name failed; the end of $out/$name.err:" >&2
        tail -n 5 "$out/$name.err" >&2
    fi
}

run device_check python3 "$here/device_check.py" --device "$device" --json
common=(--device "$device" --size "$size" --frames "$frames" --steps "$steps" --guidance 1 --json)
run networks python3 "$here/bench_networks.py" --device "$device" --tile "$tile" --batch 16 --compile --json
run networks_b64 python3 "$here/bench_networks.py" --device "$device" --tile "$tile" --batch 64 --json
run pipeline python3 "$here/bench_pipeline.py" "${common[@]}"
run stream python3 "$here/bench_pipeline.py" --model stream-diffvsr --device "$device" --size "$size" --frames "$frames" --json
run pipeline_untiled python3 "$here/bench_pipeline.py" "${common[@]}" --tile 0
run pipeline_compile python3 "$here/bench_pipeline.py" "${common[@]}" --compile
# The host's share at the GPU's measured speed: GPU seconds per sampled frame of the default run
# (clips of 8 overlapping by 2 sample F frames as 8 + 8 + ... + the rest, every 6 frames).
accel=$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
s, f = r['stages'], r['frames']
sampled = sum(min(8, f - 6 * k) for k in range(1 + max(0, -(-(f - 8) // 6))))
print(round((s['unet'] + s['vae'] + s['guidance'] + s['color_fix']) / sampled, 3))" "$out/pipeline.json" 2>/dev/null || echo 1.5)
run host python3 "$here/bench_host.py" --size "$size" --frames 48 --accelerator-s "$accel" --json
stream_s=$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
s = r['stages']
print(round((s['unet'] + s['controlnet'] + s['vae'] + s['color_fix']) / r['frames'], 3))" "$out/stream.json" 2>/dev/null || echo 0.36)
run host_stream python3 "$here/bench_host.py" --size "$size" --frames 48 --accelerator-s "$stream_s" --kind sequential --json
run stablevsr python3 "$here/bench_pipeline.py" --model stablevsr --device "$device" --size "$size" --frames "$frames" --steps "$steps" --json
run mgld python3 "$here/bench_pipeline.py" --model mgld-vsr --flops-only --size "$size" --json
run uav python3 "$here/bench_pipeline.py" --model upscale-a-video --flops-only --size "$size" --json
ls -l "$out" >&2
