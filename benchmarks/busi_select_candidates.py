"""Per BUSI episode (busi_select_dump.py's data): candidate boxes (each coarse component's at margins 0 / 0.1 /
0.25; 0.7 / 1 / 1.4 x the support lesions' typical box around the 5 strongest peaks of the margin map; the
two largest components' strongest cells covering 1 / 2 x the typical support area; a second decoder pass on
each component candidate), decoded by LiteMedSAM, with each candidate's Dice and features (decoder IoU
estimate, size, prototype-map contrast, lite0 and LiteMedSAM-embedding mean inside vs the support lesions'
and backgrounds' prototypes and vs its own ring). Then busi_select_rules.py scores selection rules on them.

    python benchmarks/busi_select_candidates.py s0_k5_n50 [EPISODES]   # -> /tmp/select/cands_TAG_EPISODES.pkl

⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI.
"""
import pickle
import sys
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scipy import ndimage
from napari_fewshot.core.sam_prompt import BoxPrompter, PlaneEmbedding, box_of, box_region
from napari_fewshot.core.refine import refine_plane
from napari_fewshot.core.config import RefineParams
from napari_fewshot.core.postprocess import keep_largest_per_image
from napari_fewshot.core.predict import upsample
from napari_fewshot.core.candidate_score import SupportProfile, prototype_contrast, ring_contrast
from napari_fewshot.core.proposals import component_masks, peak_points, centred_box, decoded_masks
from napari_fewshot.evaluation.busi import localisation

D = Path("/tmp/select/data")
tag = sys.argv[1]  # e.g. s0_k5_n50
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 999
eps = pickle.load(open(D / f"eps_{tag}.pkl", "rb"))[:limit]
prompter = BoxPrompter()
_cache = {}
def img(i):
    if i not in _cache: _cache[i] = torch.load(D / f"img_{i}.pt", weights_only=False)
    return _cache[i]

def pool(feat, mask):
    """feat (C,h,w) float, mask (H,W) bool covering the whole feature grid -> (C,) MAP."""
    w = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=feat.shape[-2:], mode="area")[0, 0]
    if w.sum() < 1e-6: return None
    return (feat * w).sum((1, 2)) / w.sum()

def sam_grid_mask(mask, d):
    """(H,W) mask -> (64,64) weights on the SAM embedding grid (padded)."""
    h, w = PlaneEmbedding(None, d["shape"], d["scale"]).resized
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(h, w), mode="area")
    m = F.pad(m, (0, 256 - w, 0, 256 - h))
    return F.avg_pool2d(m, 4)[0, 0]

def sam_pool(d, mask):
    wgt = sam_grid_mask(mask, d)
    if wgt.sum() < 1e-6: return None
    f = d["sam"][0].float()
    return (f * wgt).sum((1, 2)) / wgt.sum()

def ring(mask, frac=0.25, width=None):
    width = width or max(3, int(round(frac * np.sqrt(mask.sum()))))
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - width - 1), min(mask.shape[0], ys.max() + width + 2)
    x0, x1 = max(0, xs.min() - width - 1), min(mask.shape[1], xs.max() + width + 2)
    out = np.zeros_like(mask)
    crop = mask[y0:y1, x0:x1]
    d = ndimage.distance_transform_cdt(~crop, metric="chessboard")
    out[y0:y1, x0:x1] = (d > 0) & (d <= width)
    return out

def cos(a, B):
    return F.cosine_similarity(a[None], B, dim=1).numpy()

import time
rows = []
for n, ep in enumerate(eps):
    t0 = time.time()
    q, sup = ep["query"], ep["supports"]
    dq = img(q); truth = dq["mask"]; H, W = truth.shape
    scores = upsample(torch.from_numpy(ep["coarse"])[None], (H, W))[0].numpy()
    margin = scores[1] - np.delete(scores, 1, 0).max(0)
    coarse = scores.argmax(0) == 1
    profile = SupportProfile.from_masks([img(i)["mask"] for i in sup])
    emb = PlaneEmbedding(dq["sam"].float(), dq["shape"], dq["scale"])
    decode = lambda boxes, masks=None: prompter.decode_with_quality(emb, boxes, masks)
    # support prototypes
    P = {}
    for kind, get in (("lite", lambda d, m: pool(d["feat"].float(), m)), ("sam", sam_pool)):
        les, bg, rg = [], [], []
        for i in sup:
            d = img(i); m = d["mask"]
            les.append(get(d, m)); bg.append(get(d, ~m)); rg.append(get(d, ring(m)))
        P[kind] = tuple(torch.stack([x for x in v if x is not None]) for v in (les, bg, rg))
    # default path
    default = refine_plane(coarse.astype(np.uint8), [1], lambda b, m: decode(b, m)[0], RefineParams())
    lab = [default.copy()]; keep_largest_per_image(lab, [1], [0]); default = lab[0] == 1
    lab = [coarse.astype(np.uint8)]; keep_largest_per_image(lab, [1], [0]); coarse_l = lab[0] == 1
    # candidates
    boxes, origin = [], []
    comps = component_masks(coarse, 64, 3)
    for ci, c in enumerate(comps):
        for mg in (0.0, 0.1, 0.25):
            boxes.append(box_of(c, mg)); origin.append(f"comp{ci}_m{mg}")
    tb = profile.typical_box((H, W))
    for pi, pt in enumerate(peak_points(margin, 5)):
        for s in (0.7, 1.0, 1.4):
            boxes.append(centred_box(pt, (tb[0] * s, tb[1] * s), (H, W))); origin.append(f"peak{pi}_s{s}")
    # support-area-calibrated threshold inside the largest components: top-A margin pixels
    area = np.exp(profile.log_area.mean()) * H * W
    for ci, c in enumerate(comps[:2]):
        vals = margin[c]
        for s in (1.0, 2.0):
            k = int(min(len(vals), s * area))
            if k < 16: continue
            t = np.sort(vals)[-k]
            sub = component_masks(c & (margin >= t), 1, 1)
            if sub:
                boxes.append(box_of(sub[0], 0.1)); origin.append(f"top{ci}_a{s}")
    boxes = np.stack(boxes).astype(np.float32)
    probs, qual = decode(boxes)
    masks = decoded_masks(boxes, probs)
    # second pass on each of the component candidates (mask prompt + its tight box)
    sec = [j for j, o in enumerate(origin) if o.startswith("comp") and masks[j].any()]
    if sec:
        b2 = np.stack([box_of(masks[j], 0.05) for j in sec]).astype(np.float32)
        p2, q2 = decode(b2, np.stack([probs[j] for j in sec]))
        m2 = decoded_masks(b2, p2)
        for jj, j in enumerate(sec):
            masks.append(m2[jj]); qual = np.append(qual, q2[jj]); origin.append(origin[j] + "_2nd")
    cands = []
    for m, qv, o in zip(masks, qual, origin):
        if not m.any():
            continue
        loc = localisation(m, truth)
        f = dict(origin=o, iou=float(qv), area=float(m.mean()), sizedev=profile.size_deviation(float(m.mean())),
                 logarea_z=float((np.log(m.mean()) - profile.log_area.mean()) / max(profile.log_area.std(), 0.5)),
                 ring=float(margin[m].mean() - margin[ring(m, width=max(2, int(round(0.1 * np.sqrt(m.sum())))))].mean()),
                 inside=float(margin[m].mean()), in_coarse=float(coarse[m].mean()),
                 cover_coarse=float((coarse & m).sum() / max(1, coarse_l.sum())),
                 overlap_default=float((m & default).sum() / max(1, (m | default).sum())), **loc)
        for kind in ("lite", "sam"):
            les, bg, rg = P[kind]
            rm = ring(m)
            v = pool(img(q)["feat"].float(), m) if kind == "lite" else sam_pool(dq, m)
            vr = pool(img(q)["feat"].float(), rm) if kind == "lite" else sam_pool(dq, rm)
            f[f"{kind}_les_mean"] = float(cos(v, les).mean()); f[f"{kind}_les_max"] = float(cos(v, les).max())
            f[f"{kind}_bg_max"] = float(cos(v, bg).max()); f[f"{kind}_bg_mean"] = float(cos(v, bg).mean())
            f[f"{kind}_ring_max"] = float(cos(v, rg).max()); f[f"{kind}_ring_mean"] = float(cos(v, rg).mean())
            # ring of the candidate vs support rings (surroundings alike)
            f[f"{kind}_ringring"] = float(cos(vr, rg).mean()) if vr is not None else 0.0
            f[f"{kind}_inout"] = float(F.cosine_similarity(v[None], vr[None]).item()) if vr is not None else 1.0
        cands.append(f)
    rows.append(dict(query=q, name=dq["name"], default=localisation(default, truth), coarse=localisation(coarse_l, truth),
                     cands=cands))
    best = max(c["dice"] for c in cands)
    pickle.dump(rows, open(f"/tmp/select/cands_{tag}_{limit}.pkl", "wb"))
    print(n, dq["name"], "default %.2f oracle %.2f n=%d" % (rows[-1]["default"]["dice"], best, len(cands)), "%.1fs" % (time.time() - t0), flush=True)
pickle.dump(rows, open(f"/tmp/select/cands_{tag}_{limit}.pkl", "wb"))
