"""Test-session settings: one intra-op thread (tiny models run faster without thread hand-offs on 2 cores)."""

import torch

torch.set_num_threads(1)
