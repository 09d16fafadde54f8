"Trainer pieces whose GPU branches run here with the GPU stood in for."
import pytest, torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.params import auto_batch
from smollm2_nb.train import loop, setup   # setup: the device, DDP and batch-size policy the loop uses
from smollm2_nb.train.config import TrainConfig

def test_batch_size_auto_plans_for_a_t4(monkeypatch):
    "On a T4 with 6 GiB to plan for, sequence 2048 in fp16: the micro-batch the memory estimate fits, accumulation keeping 16."
    monkeypatch.setattr(setup, 'cuda_budget_gib', lambda device=None: 6.0)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Tesla T4')
    cfg, note = loop.resolve_batch_size(TrainConfig(batch_size='auto', seq_len=2048, grad_accum=2), torch.device('cuda'), 'fp16')
    assert (cfg.batch_size, cfg.grad_accum) == auto_batch(get_config('smollm2-135m'), 2048, 'fp16', 6.0, 16)
    assert cfg.grad_accum > 2 and cfg.batch_size * cfg.grad_accum == 16 and 'Tesla T4' in note, note
    monkeypatch.setattr(setup, 'cuda_budget_gib', lambda device=None: 0.5)
    with pytest.raises(ValueError, match='not even 1 sequence'):
        loop.resolve_batch_size(TrainConfig(batch_size='auto', seq_len=2048), torch.device('cuda'), 'fp16')
