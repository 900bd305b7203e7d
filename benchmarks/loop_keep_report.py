"""Tables of benchmarks/loop_keep.py runs: per drag the mean Dice of the 20, of the images not boxed yet, what
the last box did to the untouched images (mean change, fell / rose by > 0.1), and each fall's selection trace.

    python benchmarks/loop_keep_report.py OUT.json [OUT2.json ...]"""
import json
import sys

for path in sys.argv[1:]:
    report = json.load(open(path))
    try:
        trace = json.load(open(path.replace(".json", ".trace.json")))
    except FileNotFoundError:
        trace = []
    names = report["config"]["images_drawn"]
    drags = list(report["dice_per_drag"])
    print(f"== {path}: noc_85 {report['noc_85']}, every image boxed {report['box_every_image']:.3f}, "
          f"{report['seconds']:.0f} s")
    print("drag | mean 20 | not boxed | untouched: mean change, fell, rose | kept/with previous")
    for n, d in enumerate(drags):
        change = report["unboxed_changes"].get(d)
        rows = [r for r in trace if r["segmentation"] == n + 1 and "kept" in r]
        text = "" if change is None else f"{change['mean_change']:+.3f} {change['fell']} {change['rose']}"
        unboxed = report["dice_per_drag_unboxed"][d]
        print(f"{d} | {report['dice_per_drag'][d]:.3f} | {'-' if unboxed is None else f'{unboxed:.3f}'} | {text} | "
              f"{sum(r['kept'] for r in rows)}/{len(rows)}")
        if n and change is not None:
            before, after = report["dice_per_image"][drags[n - 1]], report["dice_per_image"][d]
            for r in rows:
                name = names[r["image"]]
                delta = after[name] - before[name]
                if abs(delta) > 0.1:
                    print(f"     {name}: {before[name]:.2f} -> {after[name]:.2f}; best {r['best']}, previous "
                          f"(contrast, likeness) {r.get('previous')}, shown {r['shown']}, IoU with previous "
                          f"{r.get('iou_with_previous')}")
