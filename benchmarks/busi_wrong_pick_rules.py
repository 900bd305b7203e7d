"""Selection rules offline on busi_select_features.py dumps (/tmp/busi11/feat_TAG.pkl): mean Dice at the decoder's
resolution of each rule's pick. python benchmarks/busi_wrong_pick_rules.py s0_k20_n50,s1_k20_n50
⚠ LiteMedSAM figures: MedSAM's training data included public breast-ultrasound sets, possibly BUSI."""
import pickle, sys, numpy as np
def cos(A, v):
    A = np.atleast_2d(A).astype(np.float64); v = v.astype(np.float64)
    return A @ v / np.maximum(np.linalg.norm(A, axis=1) * np.linalg.norm(v), 1e-12)
RULES = {
 "default: contrast + like": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean(),
 "like - bg": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean() - cos(e["sup_bg"], c["vec"]).mean(),
 "like - ring": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean() - cos(e["sup_ring"], c["vec"]).mean(),
 "like - max(bg,ring)": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean() - np.maximum(cos(e["sup_bg"], c["vec"]), cos(e["sup_ring"], c["vec"])).mean(),
 "+ cover": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean() + c["cover"],
 "+ inside": lambda c, e: c["contrast"] + cos(e["lesions"], c["vec"]).mean() + c["inside"],
 "oracle": lambda c, e: c["dice_low"],
}
for tag in sys.argv[1].split(","):
    rows = pickle.load(open(f"/tmp/busi11/feat_{tag}.pkl", "rb"))
    for name, rule in RULES.items():
        d = []; hits = 0
        for e in rows:
            if not e["cands"]: d.append(0.0); continue
            p = max(e["cands"], key=lambda c: rule(c, e)); d.append(p["dice_low"]); hits += p["dice_low"] > 0.1
        print(f"{tag} n={len(rows)} {name:24s} {np.mean(d):.3f} hits~{hits/len(rows):.2f}")
