"DDP on CPU (gloo): 2 processes x batch B train exactly like 1 process x batch 2B."
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch
from smollm2_nb.train.config import TrainConfig; from smollm2_nb.train.loop import train; from smollm2_nb.run.layout import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(preset='tiny', steps=4, seq_len=32, grad_accum=2, lr=3e-3, warmup_steps=1, eval_every=2, eval_batches=2,
            sample_every=4, sample_tokens=4, ckpt_every=2, seed=7)

def _flags(d: dict) -> list[str]:
    return [x for k, v in d.items() for x in ('--' + k.replace('_', '-'), str(v))]

def test_ddp_matches_single_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'smollm2_nb.train.loop',
           *_flags(dict(ARGS, batch_size=2, out=tmp_path / 'ddp', device='cpu')), '--no-progress']
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = json.loads((tmp_path / 'ddp' / 'run.json').read_text())
    assert (run['world_size'], run['status'], run['tokens_per_step']) == (2, 'finished', 2 * 2 * 32 * 2)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each DDP process (OMP_NUM_THREADS=1): oversubscribed cores are many times slower
    try: single = train(TrainConfig(**ARGS, batch_size=4, out=str(tmp_path / 'single'), device='cpu', progress=False))
    finally: torch.set_num_threads(threads)
    assert single['status'] == 'finished'
    ddp, one = read_jsonl(tmp_path / 'ddp' / 'metrics.jsonl'), read_jsonl(tmp_path / 'single' / 'metrics.jsonl')
    assert [m['step'] for m in ddp] == [m['step'] for m in one] == [1, 2, 3, 4]
    for a, b in zip(ddp, one):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5, abs=1e-5), (a, b)
        assert ('val_loss' in a) == ('val_loss' in b), (a, b)   # evaluated at the same steps
        if 'val_loss' in a: assert a['val_loss'] == pytest.approx(b['val_loss'], rel=1e-5, abs=1e-5), (a, b)
    assert len(read_jsonl(tmp_path / 'ddp' / 'samples.jsonl')) == len(TrainConfig().sample_prompts)  # rank 0 only
