"""``ct_prior_generalisation.py`` with the bundled UNets' global attention rescaled for large grids: the logits are
multiplied by sqrt(log n / log n_train), n the positions of the map and n_train those of the 128 x 128 training
grid, which keeps the attention's entropy as in training (Jin et al., NeurIPS 2023, "Training-free diffusion model
adaptation for variable-sized text-to-image synthesis"). Arguments are those of ``ct_prior_generalisation.py``.

    OMP_NUM_THREADS=1 python experiments/attention_entropy_check.py --out out/ent.csv --sets anatomy-val --size 512 \
        --settings limited-0-120 --methods dds --priors v3ent=bundled:ct-anatomy-v3-128
"""
import math
import os
import sys

import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from recon.priors import unet  # noqa: E402

TRAIN_PIXELS = 128


def _attend(self, qkv):
    b, _, c, h, w = qkv.shape
    q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
    n_train = (TRAIN_PIXELS // 2 ** self.level) ** 2
    scale = None
    if h * w > n_train:
        scale = math.sqrt(math.log(h * w) / math.log(n_train)) / math.sqrt(c // self.heads)
    a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2), scale=scale)
    return a.transpose(-1, -2).reshape(b, c, h, w)


if __name__ == "__main__":
    unet.Attention._attend = _attend
    import ct_prior_generalisation
    sys.argv = ["ct_prior_generalisation.py"] + sys.argv[1:]
    ct_prior_generalisation.main()
