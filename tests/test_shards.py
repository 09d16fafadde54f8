"""Training on prepared (sharded) datasets and mixtures: the sampler across shards keeps the one-array offsets, never
crosses a shard end, splits the global batch across DDP ranks and mixes by weight; `smollm2 train --data DIR` refuses
another tokenizer's ids and resumes a multi-shard run exactly. The datasets here are written by `write_prepared`, a
few lines that follow the format (manifest.json + raw uint16 shards), not by `smollm2 data prepare`."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from smollm2_nb.model.tokenizer import load_tokenizer
from smollm2_nb.run.data import BatchSampler, Split, get_batch, tokenizer_id
from smollm2_nb.run.layout import read_jsonl
from smollm2_nb.run.shards import DataError, open_data, open_prepared, parse_mixture

TINY = ['--preset', 'tiny', '--batch-size', '2', '--seq-len', '32', '--lr', '3e-3', '--warmup-steps', '2',
        '--sample-every', '0', '--no-progress']

@pytest.fixture(scope='module')
def tok_info():
    tok = load_tokenizer()
    return dict(id=tokenizer_id(tok), name=tok.name_or_path, eos_token_id=tok.eos_token_id, vocab_size=len(tok))

def write_prepared(d: Path, docs: dict, tokenizer: dict, shard_tokens: int = 300, complete: bool = True) -> Path:
    "A prepared dataset per the format: each split's documents (arrays of ids, each ending with EOS) in shards of about `shard_tokens`."
    d.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, ds in docs.items():
        shards, buf, n = [], [], 0
        for i, doc in enumerate(ds):
            buf.extend(int(t) for t in doc); n += 1
            if len(buf) >= shard_tokens or i == len(ds) - 1:   # a document never straddles two shards
                f = f'{split}-{len(shards):06d}.bin'
                np.array(buf, dtype='<u2').tofile(d / f)
                shards.append(dict(file=f, tokens=len(buf), documents=n)); buf, n = [], 0
        splits[split] = dict(tokens=sum(s['tokens'] for s in shards), documents=len(ds), shards=shards)
    manifest = dict(format='smollm2-shards/1', complete=complete, dtype='uint16', tokenizer=tokenizer, source=dict(test=d.name),
                    val_fraction=0.1, shard_tokens=shard_tokens, splits=splits, resume={})
    (d / 'manifest.json').write_text(json.dumps(manifest))
    return d

def random_docs(n: int, seed: int, eos: int = 0, lo: int = 20, hi: int = 120) -> list:
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(1, 5000, size=rng.integers(lo, hi)), eos) for _ in range(n)]

def _env():
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')}
    env.update(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1')
    return env

def smollm2(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', *map(str, args)], capture_output=True, text=True, env=_env(), timeout=480)  # generous: the machine is shared

def one_line(r: subprocess.CompletedProcess, code: int, contains: str):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert contains in r.stderr, r.stderr

# --- the sampler ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('n,bs,T,world', [(306_985, 8, 256, 1), (306_985, 2, 32, 2), (5_000, 3, 64, 4), (1_025, 4, 256, 1)])
def test_one_array_gives_the_old_offsets(n, bs, T, world):
    "One array: array 0 and exactly the offsets of the one-array formula, rank slice included, whatever the way in."
    for rank in range(world):
        ways = [BatchSampler(n, bs, T, seed=1337, rank=rank, world_size=world),
                BatchSampler([n], bs, T, seed=1337, rank=rank, world_size=world),
                BatchSampler(Split([np.zeros(n, np.uint16)]), bs, T, seed=1337, rank=rank, world_size=world)]
        for step in (0, 1, 2, 500, 4999):
            old = np.random.default_rng([1337, step]).integers(0, n - T, size=bs * world)[rank * bs:(rank + 1) * bs]
            for s in ways:
                w = s.offsets(step)
                assert w.shape == (bs, 2)
                np.testing.assert_array_equal(w[:, 1], old)
                np.testing.assert_array_equal(w[:, 0], 0)

def test_windows_never_cross_a_shard_end():
    rng = np.random.default_rng(0)
    sizes = [int(x) for x in rng.integers(1, 400, size=40)] + [33, 32, 34]   # many shorter than a window of 33
    start = np.cumsum([0] + sizes)
    shards = [np.arange(a, b, dtype=np.int64) for a, b in zip(start[:-1], start[1:])]   # token = its position in the corpus
    T = 32
    s = BatchSampler(sizes, 16, T, seed=5)
    seen = set()
    for step in range(300):
        w = s.offsets(step)
        assert ((w[:, 1] >= 0) & (w[:, 1] + T + 1 <= np.array(sizes)[w[:, 0]])).all()
        x, y = get_batch(shards, w, T)
        whole = np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1)
        np.testing.assert_array_equal(whole, start[w[:, 0], None] + w[:, 1, None] + np.arange(T + 1))  # contiguous, in its shard
        seen |= set(w[:, 0].tolist())
    assert seen == {i for i, n in enumerate(sizes) if n > T}    # every shard with a window is drawn, no other

def test_ddp_ranks_are_disjoint_and_make_the_global_batch():
    sizes = [1_000_003, 500_000, 2_000_017, 77, 900_000]
    for world in (2, 4):
        glob = BatchSampler(sizes, 8 * world, 64, seed=11)
        ranks = [BatchSampler(sizes, 8, 64, seed=11, rank=r, world_size=world) for r in range(world)]
        for step in range(20):
            parts = [r.offsets(step) for r in ranks]
            np.testing.assert_array_equal(np.concatenate(parts), glob.offsets(step))
            sets = [set(map(tuple, p.tolist())) for p in parts]
            assert sum(map(len, sets)) == len(set().union(*sets)) == 8 * world      # no window on two ranks

def test_mixture_proportions_follow_the_weights():
    sizes = [[200, 150], [50_000, 60_000, 10_000], [3_000]]     # dataset sizes far from the weights
    for weights in ([0.5, 0.3, 0.2], [7, 2, 1]):
        s = BatchSampler(sizes, 64, 16, seed=2, weights=weights)
        w = np.concatenate([s.offsets(i) for i in range(400)])  # 25,600 windows
        dataset = np.searchsorted([2, 5, 6], w[:, 0], side='right')
        share = np.bincount(dataset, minlength=3) / len(w)
        np.testing.assert_allclose(share, np.asarray(weights) / sum(weights), atol=0.01)
    with pytest.raises(ValueError, match='no array longer than a window'):
        BatchSampler([[10], [3000]], 4, 16, weights=[1, 1])

def test_parse_mixture(tmp_path):
    assert parse_mixture('a:0.7,b:0.3') == [('a', 0.7), ('b', 0.3)]
    assert parse_mixture('a:3,b:1') == [('a', 0.75), ('b', 0.25)]
    odd = tmp_path / 'x:1'; odd.mkdir()
    assert parse_mixture(str(odd)) == [(str(odd), 1.0)]              # a path that exists is one path
    for bad, msg in [('a:0.7,b', 'PATH:WEIGHT'), ('a:1,b:0', 'positive'), ('a:1,a:1', 'twice')]:
        with pytest.raises(DataError, match=msg): parse_mixture(bad)

def test_open_prepared_refusals(tmp_path, tok_info):
    d = write_prepared(tmp_path / 'ds', {'train': random_docs(30, 0), 'val': random_docs(4, 1)}, tok_info)
    train, val = open_prepared(d, load_tokenizer())
    m = json.loads((d / 'manifest.json').read_text())
    assert [len(a) for a in train] == [s['tokens'] for s in m['splits']['train']['shards']] and len(train) > 3
    assert all(isinstance(a, np.memmap) for a in train + val)
    other = dict(tok_info, id='0123456789abcdef', name='someone/else')
    with pytest.raises(DataError, match="prepared with tokenizer 'someone/else'"):
        open_prepared(write_prepared(tmp_path / 'other', {'train': random_docs(5, 0), 'val': []}, other), load_tokenizer())
    with pytest.raises(DataError, match='is not complete'):
        open_prepared(write_prepared(tmp_path / 'part', {'train': random_docs(5, 0), 'val': []}, tok_info, complete=False))
    (d / 'train-000001.bin').write_bytes(b'\0' * 10)
    with pytest.raises(DataError, match='holds 10 bytes'): open_prepared(d)
    (d / 'train-000001.bin').unlink()
    with pytest.raises(DataError, match='but missing'): open_prepared(d)

def test_text_corpus_is_one_single_shard_dataset():
    td = open_data(None, load_tokenizer())
    assert (td.train_tokens, td.val_tokens) == (306_985, 34_109)
    assert (len(td.train.arrays), td.train.groups, td.train.weights, len(td.val.arrays)) == (1, [1], [1.0], 1)
    assert td.datasets[0]['kind'] == 'text' and td.datasets[0]['weight'] == 1.0

# --- through the real command --------------------------------------------------------------------------------------

def test_another_tokenizers_dataset_is_refused(tmp_path, tok_info):
    other = write_prepared(tmp_path / 'other', {'train': random_docs(40, 0), 'val': random_docs(4, 1)},
                           dict(tok_info, id='0123456789abcdef', name='someone/else'))
    r = smollm2('train', *TINY, '--steps', '2', '--data', other, '--out', tmp_path / 'run')
    one_line(r, 2, "was prepared with tokenizer 'someone/else'")
    assert '--tokenizer someone/else' in r.stderr
    assert not (tmp_path / 'run' / 'run.json').exists() and not (tmp_path / 'run' / 'checkpoints').exists()   # no model built, nothing written
    part = write_prepared(tmp_path / 'part', {'train': random_docs(40, 0), 'val': []}, tok_info, complete=False)
    one_line(smollm2('train', *TINY, '--steps', '2', '--data', part, '--out', tmp_path / 'run2'), 2, 'is not complete')
    one_line(smollm2('train', *TINY, '--steps', '2', '--data', f'{part}:1,x', '--out', tmp_path / 'run3'), 2, 'PATH:WEIGHT')

def test_mixture_weights_and_identity_in_run_json(tmp_path, tok_info):
    a = write_prepared(tmp_path / 'a', {'train': random_docs(40, 0), 'val': random_docs(6, 1)}, tok_info)
    b = write_prepared(tmp_path / 'b', {'train': random_docs(60, 2), 'val': []}, tok_info)
    r = smollm2('train', *TINY, '--steps', '2', '--eval-every', '2', '--eval-batches', '1', '--data', f'{a}:3,{b}:1', '--out', tmp_path / 'run')
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / 'run' / 'run.json').read_text())
    ds = info['datasets']
    assert [(d['path'], d['weight']) for d in ds] == [(str(a), 0.75), (str(b), 0.25)]
    assert ds[0]['manifest_sha256'] == hashlib.sha256((a / 'manifest.json').read_bytes()).hexdigest()[:16]
    assert ds[0]['tokenizer']['id'] == tok_info['id'] and ds[1]['val_tokens'] == 0
    assert info['data'] == [str(a), str(b)]
    assert info['train_tokens'] == sum(d['train_tokens'] for d in ds)
    assert info['val_loss'] is not None                     # validated on a's val split alone
    (tmp_path / 'mix.json').write_text(json.dumps({'a': 3, 'b': 1}))   # the same mixture as a file beside the data
    r = smollm2('train', *TINY, '--steps', '2', '--eval-every', '2', '--eval-batches', '1', '--data', tmp_path / 'mix.json', '--out', tmp_path / 'run2')
    assert r.returncode == 0, r.stderr
    info2 = json.loads((tmp_path / 'run2' / 'run.json').read_text())
    assert info2['datasets'] == ds and [m['loss'] for m in read_jsonl(tmp_path / 'run2' / 'metrics.jsonl')] == \
        [m['loss'] for m in read_jsonl(tmp_path / 'run' / 'metrics.jsonl')]

def test_multi_shard_run_resumes_exactly(tmp_path, tok_info):
    "A run on a dataset of many shards, stopped at step 4 and resumed to 8, logs the losses of an uninterrupted run of 8."
    d = write_prepared(tmp_path / 'ds', {'train': random_docs(120, 0), 'val': random_docs(12, 1)}, tok_info, shard_tokens=250)
    assert len(json.loads((d / 'manifest.json').read_text())['splits']['train']['shards']) >= 20
    common = [*TINY, '--data', d, '--schedule-steps', '8', '--eval-every', '2', '--eval-batches', '2', '--ckpt-every', '100']
    ref = smollm2('train', *common, '--steps', '8', '--out', tmp_path / 'ref')
    assert ref.returncode == 0, ref.stderr
    first = smollm2('train', *common, '--steps', '4', '--out', tmp_path / 'run')
    assert first.returncode == 0, first.stderr
    again = smollm2('train', '--resume', tmp_path / 'run', '--steps', '8')
    assert again.returncode == 0, again.stderr
    read = lambda p: [json.loads(l) for l in (p / 'metrics.jsonl').read_text().splitlines()]
    got, want = read(tmp_path / 'run'), read(tmp_path / 'ref')
    assert [m['step'] for m in got] == list(range(1, 9))
    assert [m['loss'] for m in got] == [m['loss'] for m in want]              # bit for bit
    assert [m.get('val_loss') for m in got] == [m.get('val_loss') for m in want]
    assert sum('val_loss' in m for m in got) == 4
    assert 'the data is not what' not in again.stdout + again.stderr
    other = write_prepared(tmp_path / 'other', {'train': random_docs(50, 5), 'val': []}, tok_info)
    changed = smollm2('train', '--resume', tmp_path / 'run', '--steps', '9', '--data', other)   # resuming on other data: said
    assert changed.returncode == 0 and 'the data is not what' in changed.stdout, changed.stdout + changed.stderr
