#!/usr/bin/env bash
# Device call 1 (carry .gpu/p1 .gpu/first.sh .whl): part 1 of the archive, the one wheel the image lacks
# (pytorch-metric-learning, imported by the CLI), and with SMOKE=1 a run of the GPU path on the embedded sample,
# left running in the background while parts 2-4 travel (calls 2-4: `mv .gpu/pN /root/nc/tin/`, carry .gpu/pN).
set -u
R=/root/nc; mkdir -p $R/tin
mv .gpu/p1 $R/tin/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $R/site .whl/*.whl || exit 5
rm -rf $R/src; cp -r src $R/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc; free -g | head -2; df -h /dev/shm /root | cat
export PYTHONPATH=$R/site:$R/src NEURALCODES_CACHE=$R/cache-sample
python3 -c "import torch, neuralcodes.cli; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
[ -n "${SMOKE:-}" ] && setsid nohup bash -c "python3 -m neuralcodes run --out $R/smoke --epochs 2 --variants batch_norm,augment > $R/smoke.log 2>&1; echo smoke exit \$? >> $R/smoke.log" > /dev/null 2>&1 < /dev/null &
[ -n "${SMOKE:-}" ] && sleep 12; tail -4 $R/smoke.log 2>/dev/null; true
