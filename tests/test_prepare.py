"""`smollm2 data prepare`: every source format, the shards and manifest it writes, the document-level validation split,
real interruptions (SIGKILL, SIGTERM) of the command in a subprocess followed by a byte-identical resume, bad input."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from smollm2_nb.model.tokenizer import load_tokenizer
from smollm2_nb.run.data import shakespeare_path, tokenizer_id
from smollm2_nb.run.prepare import MANIFEST, PrepareError, cli_data, is_val, prepare

@pytest.fixture(scope='module')
def tok(): return load_tokenizer()

@pytest.fixture(scope='module')
def speeches():
    "Tiny Shakespeare cut into documents at blank lines (a speech each): 7,000-odd documents."
    return [s for s in shakespeare_path().read_text().split('\n\n') if s.strip()]

def _env():
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1'}

def smollm2(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=300, **kw)

def write_jsonl(path: Path, docs: list[str], field='text') -> Path:
    path.write_text(''.join(json.dumps({'id': i, field: d}) + '\n' for i, d in enumerate(docs)))
    return path

def shard_bytes(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.glob('*.bin'))}

def split_tokens(d: Path, split: str) -> np.ndarray:
    m = json.loads((d / MANIFEST).read_text())
    return np.concatenate([np.fromfile(d / s['file'], dtype='<u2') for s in m['splits'][split]['shards']])

def documents_of(tokens: np.ndarray, tok) -> list[str]:
    return [tok.decode(d[:-1]) for d in np.split(tokens, np.flatnonzero(tokens == tok.eos_token_id) + 1)[:-1]]  # each ends with EOS

def test_formats_give_the_same_shards_and_decode_back(tmp_path, tok, speeches):
    docs = speeches[:400]
    (tmp_path / 'txt').mkdir()
    for i, d in enumerate(docs): (tmp_path / 'txt' / f'{i:05d}.txt').write_text(d)
    write_jsonl(tmp_path / 'a.jsonl', docs)
    import gzip, pyarrow as pa, pyarrow.parquet as pq
    with gzip.open(tmp_path / 'a.json.gz', 'wt') as f: f.write((tmp_path / 'a.jsonl').read_text())
    pq.write_table(pa.table({'text': docs}), tmp_path / 'a.parquet', row_group_size=50)
    outs = {}
    for src in ('txt', f'{tmp_path}/txt/*.txt', 'a.jsonl', 'a.json.gz', 'a.parquet'):
        out = tmp_path / f'out-{len(outs)}'
        m = prepare(src if '*' in src else tmp_path / src, out, tok, val_fraction=0.1, shard_tokens=2000, workers=2, progress=False)
        outs[src] = shard_bytes(out)
        assert m['complete'] and m['splits']['train']['documents'] + m['splits']['val']['documents'] == 400
    first = next(iter(outs.values()))
    assert len(first) > 4 and all(v == first for v in outs.values())
    train, val = split_tokens(out, 'train'), split_tokens(out, 'val')
    assert documents_of(train, tok) == [d for d in docs if not is_val(d, 0.1)]   # in order, EOS after each, lossless
    assert documents_of(val, tok) == [d for d in docs if is_val(d, 0.1)]
    assert 20 < len(documents_of(val, tok)) < 60

def test_manifest_fields_and_shards(tmp_path, tok, speeches):
    out = tmp_path / 'out'
    m = prepare(write_jsonl(tmp_path / 'a.jsonl', speeches[:300]), out, tok, val_fraction=0.1, shard_tokens=1000, workers=1, progress=False)
    assert json.loads((out / MANIFEST).read_text()) == m
    assert m['format'] == 'smollm2-shards/1' and m['dtype'] == 'uint16' and m['complete'] is True
    assert m['tokenizer'] == {'id': tokenizer_id(tok), 'name': tok.name_or_path, 'eos_token_id': 0, 'vocab_size': 49152}
    assert m['source']['files'] == 1 and m['source']['text_field'] == 'text' and m['val_fraction'] == 0.1 and m['shard_tokens'] == 1000
    assert m['resume']['documents'] == 300 and m['resume']['pending'] == {}
    for split in ('train', 'val'):
        sp = m['splits'][split]
        assert sp['tokens'] == sum(s['tokens'] for s in sp['shards']) and sp['documents'] == sum(s['documents'] for s in sp['shards'])
        for i, s in enumerate(sp['shards']):
            a = np.fromfile(out / s['file'], dtype='<u2')
            assert s['file'] == f'{split}-{i:06d}.bin' and len(a) == s['tokens'] and (out / s['file']).stat().st_size == 2 * s['tokens']
            assert a[-1] == tok.eos_token_id and (a == tok.eos_token_id).sum() == s['documents']  # whole documents only
            if i < len(sp['shards']) - 1: assert s['tokens'] >= 1000  # a shard closes once it reaches shard_tokens
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, 'dataset-metadata.json'] + [s['file'] for sp in m['splits'].values() for s in sp['shards']])

def test_val_split_is_by_document_content(tmp_path, tok, speeches):
    "The split follows each document's text: shuffling the corpus moves no document between train and val."
    docs = speeches[:500]
    a = prepare(write_jsonl(tmp_path / 'a.jsonl', docs), tmp_path / 'a', tok, val_fraction=0.2, shard_tokens=10**6, workers=1, progress=False)
    rng = np.random.default_rng(0)
    shuffled = [docs[i] for i in rng.permutation(len(docs))]
    prepare(write_jsonl(tmp_path / 'b.jsonl', shuffled), tmp_path / 'b', tok, val_fraction=0.2, shard_tokens=10**6, workers=2, progress=False)
    va, vb = documents_of(split_tokens(tmp_path / 'a', 'val'), tok), documents_of(split_tokens(tmp_path / 'b', 'val'), tok)
    assert sorted(va) == sorted(vb) and 70 < len(va) < 130 and a['splits']['val']['documents'] == len(va)
    assert not set(va) & set(documents_of(split_tokens(tmp_path / 'a', 'train'), tok))

def test_hub_dataset_streamed(tmp_path, tok, speeches, monkeypatch):
    "The Hub can't be reached here: `datasets.load_dataset` is replaced at its boundary by an iterable of dicts."
    datasets = pytest.importorskip('datasets')
    calls = []
    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter({'text': d, 'id': i} for i, d in enumerate(speeches[:200]))
    monkeypatch.setattr(datasets, 'load_dataset', fake_load_dataset)
    m = prepare('HuggingFaceTB/smollm-corpus', tmp_path / 'hub', tok, hub_config='fineweb-edu-dedup', val_fraction=0.1,
                shard_tokens=3000, workers=2, limit_documents=150, progress=False)
    assert calls == [('HuggingFaceTB/smollm-corpus', 'fineweb-edu-dedup', 'train', True)]
    assert m['source'] == {'hub': 'HuggingFaceTB/smollm-corpus', 'config': 'fineweb-edu-dedup', 'split': 'train', 'text_field': 'text', 'max_documents': 150}
    assert documents_of(split_tokens(tmp_path / 'hub', 'train'), tok) == [d for d in speeches[:150] if not is_val(d, 0.1)]
    def offline(*a, **k): raise ConnectionError("Couldn't reach 'HuggingFaceTB/smollm-corpus' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    with pytest.raises(PrepareError, match='could not be opened'): prepare('HuggingFaceTB/smollm-corpus', tmp_path / 'hub2', tok, progress=False)

def test_hub_stream_resumes_from_its_saved_position(tmp_path, tok, speeches, monkeypatch):
    """A stopped prepare of a Hub stream restarts the stream where its checkpoint saved it, not at its first record.
    The Hub can't be reached here: `datasets.load_dataset` is replaced by the real streaming reader of `datasets` over
    local Parquet files (what it streams from the Hub), so `state_dict`/`load_state_dict` are datasets' own."""
    datasets = pytest.importorskip('datasets')
    import pyarrow as pa, pyarrow.parquet as pq
    import smollm2_nb.run.prepare as P
    docs, files = [f'{k}. {s}' for k in range(2) for s in speeches], []
    for j in range(8):  # eight files, as a Hub dataset is many Parquet files
        files.append(str(tmp_path / f'part-{j}.parquet'))
        pq.write_table(pa.table({'text': docs[j::8]}), files[-1], row_group_size=100)
    read, stop_after = [0], [None]
    def count(rec):
        read[0] += 1
        if stop_after[0] is not None and read[0] > stop_after[0]: raise KeyboardInterrupt  # Ctrl-C mid-stream
        return rec
    real_load_dataset = datasets.load_dataset
    def fake_load_dataset(path, name=None, split=None, streaming=False):
        assert (path, name, split, streaming) == ('HuggingFaceTB/smollm-corpus', 'fineweb-edu-dedup', 'train', True)
        return real_load_dataset('parquet', data_files=files, split='train', streaming=True).map(count)
    monkeypatch.setattr(datasets, 'load_dataset', fake_load_dataset)
    monkeypatch.setattr(P, 'HUB_STATE_EVERY', 100)
    run = lambda out: prepare('HuggingFaceTB/smollm-corpus', out, tok, hub_config='fineweb-edu-dedup', val_fraction=0.1,
                              shard_tokens=20_000, workers=2, progress=False)
    run(tmp_path / 'ref')
    total = read[0]
    assert total == len(docs)
    read[0], stop_after[0] = 0, total * 7 // 10
    with pytest.raises(KeyboardInterrupt): run(tmp_path / 'out')
    m = json.loads((tmp_path / 'out' / MANIFEST).read_text())
    at, consumed = m['resume']['hub_state']['documents'], m['resume']['documents']
    assert not m['complete'] and total // 2 < at <= consumed < at + 100, (at, consumed)
    assert '"shard_idx": 0' not in json.dumps(m['resume']['hub_state']['state'])  # a later file than the first
    read[0], stop_after[0] = 0, None
    run(tmp_path / 'out')
    assert shard_bytes(tmp_path / 'out') == shard_bytes(tmp_path / 'ref')
    assert read[0] == total - at  # the `at` records before the saved position were not read again

def test_complete_rerun_and_changed_arguments(tmp_path, tok, speeches):
    src, out = write_jsonl(tmp_path / 'a.jsonl', speeches[:100]), tmp_path / 'out'
    assert smollm2('data', 'prepare', src, '--out', out, '--shard-tokens', 2000, '--val-fraction', 0.1).returncode == 0
    before = shard_bytes(out)
    r = smollm2('data', 'prepare', src, '--out', out, '--shard-tokens', 2000, '--val-fraction', 0.1)
    assert r.returncode == 0 and 'already complete' in r.stderr, r.stderr
    r = smollm2('data', 'prepare', src, '--out', out, '--shard-tokens', 3000, '--val-fraction', 0.1)
    assert r.returncode == 2 and 'was prepared with shard_tokens 2000, not 3000' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    other_tok = tmp_path / 'tok'
    tok2 = load_tokenizer(); tok2.add_tokens(['<|mine|>']); tok2.save_pretrained(other_tok)
    r = smollm2('data', 'prepare', src, '--out', out, '--shard-tokens', 2000, '--val-fraction', 0.1, '--tokenizer', other_tok)
    assert r.returncode == 2 and 'was prepared with tokenizer' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert shard_bytes(out) == before

def test_a_changed_source_is_refused_naming_what_changed(tmp_path, tok, speeches):
    src, out = write_jsonl(tmp_path / 'a.jsonl', speeches[:50]), tmp_path / 'out'
    prepare(src, out, tok, limit_documents=20, progress=False, workers=1)
    with pytest.raises(PrepareError, match='prepared with source max_documents 20, not None'): prepare(src, out, tok, progress=False)
    write_jsonl(src, speeches[1:51])  # the file itself changed
    with pytest.raises(PrepareError, match='prepared with source (bytes|files)'): prepare(src, out, tok, limit_documents=20, progress=False)

@pytest.mark.parametrize('make, args, says', [
    (lambda d: write_jsonl(d / 'a.jsonl', ['x']), ['--text-field', 'content'], "has no field 'content'"),
    (lambda d: (d / 'bad.txt').write_bytes(b'caf\xe9 au lait') and d / 'bad.txt', [], 'is not UTF-8'),
    (lambda d: (d / 'bad.jsonl').write_text('{"text": "a"}\nnot json\n') and d / 'bad.jsonl', [], 'line 2 of'),
    (lambda d: write_jsonl(d / 'a.jsonl', ['x']), ['--val-fraction', '1.5'], '--val-fraction must be in [0, 1)'),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make, args, says):
    "In process, for speed (the missing file below goes through the real command)."
    assert cli_data(['prepare', str(make(tmp_path)), '--out', str(tmp_path / 'out'), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err

def test_missing_source_through_the_command(tmp_path):
    r = smollm2('data', 'prepare', tmp_path / 'missing.txt', '--out', tmp_path / 'out')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert 'no such file or folder' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_refuses_a_tokenizer_too_big_for_uint16(tmp_path, tok):
    class Big:
        name_or_path = 'big'
        def __len__(self): return 65_537
    with pytest.raises(PrepareError, match='uint16 shards hold ids below 65,536'): prepare(write_jsonl(tmp_path / 'a.jsonl', ['x']), tmp_path / 'o', Big())

def test_refuses_a_folder_that_is_not_a_prepare(tmp_path):
    (tmp_path / 'out').mkdir(); (tmp_path / 'out' / 'notes.txt').write_text('mine')
    r = smollm2('data', 'prepare', write_jsonl(tmp_path / 'a.jsonl', ['x']), '--out', tmp_path / 'out')
    assert r.returncode == 2 and 'holds no manifest.json' in r.stderr
    assert (tmp_path / 'out' / 'notes.txt').read_text() == 'mine'

# --- real interruptions: the command in a subprocess, killed after its first shard, then run again -------------------

BIG_ARGS = ['--shard-tokens', '20000', '--val-fraction', '0.05', '--workers', '2', '--no-progress']

@pytest.fixture(scope='module')
def big(tmp_path_factory, speeches):
    "Tiny Shakespeare's speeches 4 times over (numbered, so no two alike): ~1.4 M tokens, seconds to prepare here; and its uninterrupted prepare."
    d = tmp_path_factory.mktemp('big')
    src = write_jsonl(d / 'big.jsonl', [f'{k}. {s}' for k in range(4) for s in speeches])
    r = smollm2('data', 'prepare', src, '--out', d / 'ref', *BIG_ARGS)
    assert r.returncode == 0, r.stderr
    return src, shard_bytes(d / 'ref')

def _children(pid: int) -> list[int]:
    try: return [int(c) for c in Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]
    except OSError: return []

def _gone(pid: int) -> bool:
    try: return Path(f'/proc/{pid}/stat').read_text().split(') ')[-1].startswith('Z')  # a zombie is dead too
    except OSError: return True

@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_prepare_resumes_to_identical_shards(tmp_path, big, sig):
    src, want = big
    out = tmp_path / 'out'
    p = subprocess.Popen([sys.executable, '-m', 'smollm2_nb.cli', 'data', 'prepare', str(src), '--out', str(out), *BIG_ARGS],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    while time.time() < deadline and not (out / 'train-000000.bin').exists() and p.poll() is None: time.sleep(0.01)
    workers = _children(p.pid)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == (-sig if sig == signal.SIGKILL else 128 + sig), (p.returncode, err)
    assert 'Traceback' not in err, err
    if sig == signal.SIGTERM: assert 'run the same command again to continue' in err
    m = json.loads((out / MANIFEST).read_text())
    assert not m['complete'], 'the prepare finished before the signal: make the corpus bigger'
    assert len(workers) == 2
    deadline = time.time() + 10
    while time.time() < deadline and not all(map(_gone, workers)): time.sleep(0.05)
    assert all(map(_gone, workers)), 'a tokenizing worker outlived its parent'
    listed = {s['file'] for sp in m['splits'].values() for s in sp['shards']}
    for f in listed: assert (out / f).read_bytes() == want[f]                # what is listed is final
    kept = {f: (out / f).stat().st_mtime_ns for f in listed}
    r = smollm2('data', 'prepare', src, '--out', out, *BIG_ARGS)
    assert r.returncode == 0, r.stderr
    assert {f: (out / f).stat().st_mtime_ns for f in listed} == kept           # resumed after them: not written again
    assert shard_bytes(out) == want                                           # byte for byte the uninterrupted result
    assert not [p.name for p in out.iterdir() if p.name.startswith('.') or p.name.endswith('.tmp')]
