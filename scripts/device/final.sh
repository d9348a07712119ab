#!/usr/bin/env bash
# Device call 5 (carry .gpu/p5 .gpu/final.sh): the last part; the archive reassembled and checked; the full protocol
# (plain recipe, then the variants with --resume unless PLAIN_ONLY=1) within BUDGET seconds; logs, timings and the
# run folder without checkpoints and codes to $OUT. docs/results/full_gpu/protocol_timing.json holds what it gave.
set -u
R=/root/nc; BUDGET=${BUDGET:-535}; S=$(date +%s.%N)
mv .gpu/p5 $R/tin/ 2>/dev/null
tail -3 $R/smoke.log; cp $R/smoke.log $OUT/ 2>/dev/null
cat $R/tin/p1 $R/tin/p2 $R/tin/p3 $R/tin/p4 $R/tin/p5 > $R/tiny-imagenet-200.zip && rm -f $R/tin/p?
echo "28f6fe8478f2d35c1dd84537aac8c96ace0c6705407ffb0154f88bd87b9e2b42  $R/tiny-imagenet-200.zip" | sha256sum -c || exit 3
W=$R; [ "$(df --output=avail -k /dev/shm | tail -1)" -gt 12000000 ] && W=/dev/shm/nc   # checkpoints in memory
mkdir -p $W; RUN=$W/gpu-full
export PYTHONPATH=$R/site:$R/src NEURALCODES_CACHE=$W/cache PYTHONUNBUFFERED=1
left() { python3 -c "import time; print(max(5, int($BUDGET - (time.time() - $S))))"; }
stamp() { echo "$1 $(date +%s.%N)" >> $OUT/timing.txt; }
stamp start
timeout -s TERM $(left) python3 -m neuralcodes run --data $R/tiny-imagenet-200.zip --out $RUN > $OUT/plain.log 2>&1
echo "plain exit $?" >> $OUT/timing.txt; stamp plain_done
[ -n "${PLAIN_ONLY:-}" ] || timeout -s TERM $(left) python3 -m neuralcodes run --data $R/tiny-imagenet-200.zip --out $RUN --resume --variants batch_norm,augment > $OUT/variants.log 2>&1
echo "variants exit $?" >> $OUT/timing.txt; stamp variants_done
[ -e $RUN/config.json ] && timeout 40 python3 -m neuralcodes report $RUN >> $OUT/variants.log 2>&1
stamp report_done
nvidia-smi --query-gpu=name --format=csv,noheader >> $OUT/timing.txt
tar czf $OUT/gpu-full.tgz --exclude checkpoints --exclude codes -C $W gpu-full
cat $OUT/timing.txt; tail -25 $OUT/plain.log; tail -25 $OUT/variants.log
