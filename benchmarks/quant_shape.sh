#!/usr/bin/env bash
# 4-bit methods on a synthetic shape model (issue 24): nothing may depend on SmolLM2's grid.
#
#   bash benchmarks/quant_shape.sh            (from the repository root; writes out/shape-*)
#
# A llama-3.1-8b-shaped model cut to 2 layers, hidden 1024, intermediate 2816, 8 heads / 2 kv
# heads, vocabulary 8192, SYNTHETIC seeded weights (heavy-tailed rows, a few outlier input
# channels: `maskc testmodel --help`), compiled with lsq (calibrated, the default, and
# --no-calib) and gptq at g32 and g64 (CONFIGS="lsq 32,gptq 64" picks some); prints the
# output-level error of each build against the float model (reports/quant.json "output": KL
# and top-1 agreement on the built-in evaluation text). Perplexity means nothing on random
# weights; KL and top-1 agreement compare the methods.
set -e
export PYTHONPATH=$PWD
PY=${PY:-python}
OUT=${OUT:-out}
$PY -m maskc testmodel $OUT/shape8b-2l --shape llama-3.1-8b --hidden 1024 --intermediate 2816 \
  --layers 2 --heads 8 --kv-heads 2 --vocab 8192 --force > /dev/null
IFS=, read -ra cfgs <<< "${CONFIGS:-lsq 32,lsq-nocalib 32,gptq 32,lsq 64,lsq-nocalib 64,gptq 64}"
for cfg in "${cfgs[@]}"; do
  set -- $cfg
  extra=""; m=$1
  if [ "$m" = lsq-nocalib ]; then m=lsq; extra=--no-calib; fi
  $PY -m maskc compile $OUT/shape8b-2l -o $OUT/shape-$1-$2 --bits 4 --method $m --group-size $2 \
    $extra --force --no-verify --json > $OUT/shape-$1-$2.json 2>/dev/null || echo fail $cfg
  $PY -c "
import json;r=json.load(open('$OUT/shape-$1-$2/reports/quant.json'))
print('$1 g$2', r['totals'].get('bpw_blocks'), json.dumps(r.get('output_error') or {k:v for k,v in r.items() if 'eval' in k or 'output' in k})[:400])"
done
