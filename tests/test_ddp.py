"""DDP on CPU (gloo) under the real torchrun: 2 processes x batch B train exactly like 1 process x batch 2B, on the text
corpus and on a dataset of many shards written by `smollm2 data prepare`'s own `prepare`."""
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

def prepared_speeches(d: Path) -> Path:
    "Tiny Shakespeare's speeches as JSON lines, prepared into about 40 train shards of 8,000 tokens (and a val split)."
    from smollm2_nb.run.data import shakespeare_path
    from smollm2_nb.run.prepare import prepare
    speeches = [s for s in shakespeare_path().read_text().split('\n\n') if s.strip()]
    (d / 'speeches.jsonl').write_text(''.join(json.dumps({'text': s}) + '\n' for s in speeches))
    m = prepare(d / 'speeches.jsonl', d / 'prepared', val_fraction=0.05, shard_tokens=8_000, workers=1, progress=False)
    assert len(m['splits']['train']['shards']) > 30
    return d / 'prepared'

@pytest.mark.parametrize('data', ['text', 'shards'])
def test_ddp_matches_single_process(tmp_path, data):
    args = dict(ARGS, data=str(prepared_speeches(tmp_path))) if data == 'shards' else ARGS
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'smollm2_nb.train.loop',
           *_flags(dict(args, batch_size=2, out=tmp_path / 'ddp', device='cpu')), '--no-progress']
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = json.loads((tmp_path / 'ddp' / 'run.json').read_text())
    assert (run['world_size'], run['status'], run['tokens_per_step']) == (2, 'finished', 2 * 2 * 32 * 2)
    if data == 'shards': assert run['data'] == [args['data']] and len(run['datasets']) == 1, run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each DDP process (OMP_NUM_THREADS=1): oversubscribed cores are many times slower
    try: single = train(TrainConfig(**args, batch_size=4, out=str(tmp_path / 'single'), device='cpu', progress=False))
    finally: torch.set_num_threads(threads)
    assert single['status'] == 'finished'
    ddp, one = read_jsonl(tmp_path / 'ddp' / 'metrics.jsonl'), read_jsonl(tmp_path / 'single' / 'metrics.jsonl')
    assert [m['step'] for m in ddp] == [m['step'] for m in one] == [1, 2, 3, 4]
    for a, b in zip(ddp, one):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5, abs=1e-5), (a, b)
        assert ('val_loss' in a) == ('val_loss' in b), (a, b)   # evaluated at the same steps
        if 'val_loss' in a: assert a['val_loss'] == pytest.approx(b['val_loss'], rel=1e-5, abs=1e-5), (a, b)
    assert len(read_jsonl(tmp_path / 'ddp' / 'samples.jsonl')) == len(TrainConfig().sample_prompts)  # rank 0 only
