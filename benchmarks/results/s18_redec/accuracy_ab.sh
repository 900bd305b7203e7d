#!/bin/bash
# accuracy before/after: main (git archive at /tmp/redec_main) and this branch, one after the other
OUT=/work/wt/redec/benchmarks/results/s18_redec
PY=/work/wt/redec/.venv/bin/python
for side in main this; do
  tree=/tmp/redec_main; [ $side = this ] && tree=/work/wt/redec
  echo "== $side demo, load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd $tree && OMP_NUM_THREADS=1 PYTHONPATH=$tree $PY -B -m napari_fewshot.cli demo --headless --out /tmp/redec_demo_$side 2>&1 | grep -v -i warn | tail -4)
  echo "== $side chaos within-3 cases 1,2,3, load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd $tree && OMP_NUM_THREADS=1 PYTHONPATH=$tree $PY -B -m napari_fewshot.cli evaluate volumes /tmp/redec_chaos3 --protocol within --support-slices 3 --classes 1:liver,2:kidney_right,3:kidney_left,4:spleen --json $OUT/chaos3_within3_$side.json 2>&1 | grep -v -i warn | tail -6)
  echo "== $side done, load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
done
