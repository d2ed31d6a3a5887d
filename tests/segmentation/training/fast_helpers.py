"""Small synthetic samples of unequal shapes for the deadline trainer's tests."""

import numpy as np

from soars_dose.segmentation.training import Sample

ANCHOR3 = ["Brainstem", "SpinalCord", "Bone_Mandible"]


def toy_samples(n=3, extra=0, seed=0, shapes=((20, 30, 28), (24, 32, 32), (14, 26, 36))):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        img = rng.random(shape, dtype=np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[4:10, 6:14, 3:11] = 1
        lab[4:10, 6:14, 15:23] = 2
        lab[10:13, 15:20, 8:14] = 3
        ext = rng.random((extra,) + shape).astype(np.float16) if extra else None
        ann = np.array([True, True, i % 2 == 0, True])
        out.append(Sample(f"c{i}", img, lab, ann, ext, np.full((3, 3), np.nan),
                          (2.5, 3.9, 3.9), 0.0))
    return out
