"""A saved checkpoint of the demo transformer, shared by the extraction tests."""

import pytest
import torch

from ckptlens.sources.trained.induction import InductionTaskConfig
from ckptlens.sources.trained.train import checkpoint_metadata, save_checkpoint
from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(3)
    mcfg = ToyModelConfig(vocab_size=12, d_model=16, n_layers=2, n_heads=2)
    tcfg = InductionTaskConfig(vocab_size=12, seq_len=12, min_segment=2, max_segment=5, ood_segment=6)
    path = tmp_path / "step5.safetensors"
    save_checkpoint(AttnOnlyTransformer(mcfg), path, checkpoint_metadata(mcfg, tcfg, 5))
    return path
