import json, sys
import numpy as np
from scipy.stats import spearmanr
d=json.load(open(sys.argv[1]))
print(d['support'], [round(x,3) for x in d['loo_fg']], [round(x,3) for x in d['sup_fg_vs_bg']])
rows=[r for r in d['rows'] if not r.get('empty')]
print('empty', [r['name'] for r in d['rows'] if r.get('empty')])
for r in sorted(rows,key=lambda r:r['dice']):
    print('%-28s %.2f fgm %.3f fgx %.3f bgm %.3f bgx %.3f own %.3f fg-bg %.3f ref %.3f'%(r['name'],r['dice'],r['fg_mean'],r['fg_max'],r['bg_mean'],r['bg_max'],r['own_ring'],r['fg_mean']-r['bg_mean'],r['ref_fg_mean']))
err=[1-r['dice'] for r in rows]
for k in ['fg_mean','fg_max','bg_mean','bg_max','own_ring']:
    print(k, round(spearmanr([-r[k] for r in rows],err)[0],3))
print('bg-fg', round(spearmanr([r['bg_mean']-r['fg_mean'] for r in rows],err)[0],3))
print('bgmax-fgmax', round(spearmanr([r['bg_max']-r['fg_max'] for r in rows],err)[0],3))
