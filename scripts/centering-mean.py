#!/usr/bin/env python3
"""Recomputes crates/mneme-embed/models/m2v-minilm-256-int8-centered/mean.f32.

The mean of the unit-length embeddings that m2v-minilm-256-int8 gives the 60,000 sentences of
../shared/data/minilm-manpages/sentences.txt, as 256 little-endian f32.
Needs `pip install model2vec numpy`.
"""
import sys
from pathlib import Path

import numpy as np
from model2vec import StaticModel

root = Path(__file__).resolve().parent.parent
shared = root.parent / "shared"
model = StaticModel.from_pretrained(str(shared / "models/m2v-minilm-256-int8"))
sentences = (shared / "data/minilm-manpages/sentences.txt").read_text().splitlines()
mean = model.encode(sentences, normalize=True).mean(axis=0).astype("<f4")
out = root / "crates/mneme-embed/models/m2v-minilm-256-int8-centered/mean.f32"
out.write_bytes(mean.tobytes())
print(f"{out}: norm {np.linalg.norm(mean):.4f}", file=sys.stderr)
