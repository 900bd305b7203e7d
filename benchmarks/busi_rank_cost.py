"""CPU-s per image of busi_rank_dump.py's cues (image cues of every candidate + the consensus IoUs), the candidates
already decoded: OMP_NUM_THREADS=1 python benchmarks/busi_rank_cost.py (12 seed-0 5-shot queries, the first left out).
⚠ LiteMedSAM inside: MedSAM's training data included public breast-ultrasound sets, possibly BUSI."""
import pickle, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1])); sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np, torch
from busi_rank_dump import cues, grey, area_resize, DATA
from busi_select_score import query_of, decoder_of, embedding
from napari_fewshot.core.sam_service import LiteMedSAMService
from napari_fewshot.core.select_objects import candidates
torch.set_num_threads(1)
service = LiteMedSAMService("cpu")
eps = pickle.load(open(DATA / "eps_s0_k5_n50.pkl", "rb"))[:12]
times, counts = [], []
for ep in eps:
    q, truth, emb, coarse, margin, profile = query_of(ep)
    boxes, masks = candidates(margin, coarse, decoder_of(service, emb), profile, emb.resized)
    t = time.process_time()
    z, bright, black = grey(q, emb.resized)
    rows = [cues(z, bright, black, m) for m in masks]
    flat = np.stack([m.ravel() for m in masks]).astype(np.float32); inter = flat @ flat.T
    times.append(time.process_time() - t); counts.append(len(masks))
print("CPU-s per image for the image cues of all candidates: mean %.3f median %.3f (candidates %.1f)" % (np.mean(times[1:]), np.median(times[1:]), np.mean(counts)))
