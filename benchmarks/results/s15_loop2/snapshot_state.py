import sys, json
try:
    out = {}
    for tid, f in sys._current_frames().items():
        while f is not None:
            if f.f_code.co_name == 'evaluate_busi_boxes':
                L = f.f_locals
                out = {'per_image': L['per_image'], 'names': [L['names'][d] for d in L['drawn']], 'picked': L['picked'], 'curve': L['curve'], 'boxed': [int(k) for k in L['boxed']]}
            f = f.f_back
    import __main__
    json.dump(out, open('/tmp/loop2/live.json', 'w'))
    json.dump(__main__.trace, open('/tmp/loop2/live.rank.json', 'w'))
except Exception as e:
    open('/tmp/loop2/live.err', 'w').write(repr(e))
