"""`smollm2 kaggle push | status | logs | output` through the kaggle package's own client, against the Kaggle of
tests/kaggle_fake.py (403 for what it does not know, 400 for a source of 1 MB or more, log streams that get cut,
version ids owner/slug/N). No notebook runs here; tests/test_kaggle.py runs the pushed notebook.
"""
import base64, io, json, os, subprocess, zipfile
from pathlib import Path

import pytest

from kaggle_fake import SOURCE_LIMIT, FakeKaggle, Version

pytest.importorskip('kaggle')
ROOT = Path(__file__).resolve().parents[1]
KID = 'ada/smollm2-train'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "One wheel of this checkout for the pushes that do not test the build itself."
    from smollm2_nb.ship.kaggle_client import build_wheel
    return build_wheel(ROOT, tmp_path_factory.mktemp('dist'))


def notebook_vars(text: str) -> dict:
    "The values of the pushed notebook's papermill `parameters` cell."
    cell = next(c for c in json.loads(text)['cells'] if 'parameters' in c['metadata'].get('tags', []))
    ns = {}
    exec(cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source']), ns)
    return {k: v for k, v in ns.items() if k.isupper()}


def scratch_checkout(dest: Path) -> Path:
    "The tracked files of this checkout, committed to a new git repository at `dest`."
    files = subprocess.run(['git', '-C', str(ROOT), 'ls-files'], capture_output=True, text=True, check=True).stdout.split('\n')
    for f in filter(None, files):
        if (ROOT / f).is_file() and f.startswith(('smollm2_nb/', 'kaggle/', 'pyproject.toml', 'README.md', 'settings.ini', 'LICENSE')):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes((ROOT / f).read_bytes())
    git = lambda *a: subprocess.run(['git', '-C', str(dest), '-c', 'user.name=t', '-c', 'user.email=t@t', *a], check=True, capture_output=True)
    git('init', '-q'); git('add', '.'); git('commit', '-qm', 'scratch')
    return dest


def ended(fake: FakeKaggle, status: str = 'COMPLETE', **output) -> Version:
    "Add a version of ada/smollm2-train that ended with `output` ({name: bytes})."
    versions = fake.kernels.setdefault(KID, [])
    v = Version(len(versions) + 1, {'slug': KID}, status=status, output={k.replace('__', '/'): b for k, b in output.items()})
    versions.append(v)
    return v


def run_output(step: int) -> dict:
    return {f'run__checkpoints__step_{step:07d}.pt': f'checkpoint {step}'.encode(), 'run__run.json': b'{"status": "finished"}',
            'run__metrics.jsonl': f'{{"step": {step}, "loss": 3.0}}\n'.encode(), 'smollm2-train.ipynb': b'{}'}


def test_first_push_goes_through_the_403_for_an_unknown_kernel(capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    fake = FakeKaggle()
    with fake.installed():
        assert cli_kaggle(['push', '--accelerator', 'NvidiaL4']) == 0, capsys.readouterr().err
    assert fake.calls()[0] == 'GetKernelSessionStatus' and fake.calls()[-1] == 'SaveKernel', fake.calls()
    assert [r.status_code for r in fake.responses][0] == 403, 'Kaggle answered 403 for the kernel that does not exist yet'
    v = fake.version(f'{KID}/1')
    assert v is not None and v.request.get('kernelDataSources', []) == [], 'the kernel was saved, resuming from nothing'
    assert v.request['machineShape'] == 'NvidiaL4'
    assert 'first version of ada/smollm2-train: starting from step 0' in capsys.readouterr().out


def test_push_ships_the_working_tree_with_a_local_edit(tmp_path):
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    src = scratch_checkout(tmp_path / 'src')
    head = subprocess.run(['git', '-C', str(src), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    marker = '# local edit 7c1e: this line must reach the kernel\n'
    target = src / 'smollm2_nb' / 'serve' / 'generate.py'
    target.write_text(target.read_text() + marker)
    fake = FakeKaggle()
    with fake.installed():
        meta, resp, pushed = push_kernel(kaggle_api(), folder=src / 'kaggle', src=src)
    body = fake.json('SaveKernel')
    assert (body['slug'], body['enableGpu'], body['machineShape']) == (KID, True, 'NvidiaTeslaT4')
    assert 'git+' not in body['text'], 'no git URL is installed'
    values = notebook_vars(body['text'])
    bundle = zipfile.ZipFile(io.BytesIO(base64.b64decode(values['CODE_PAYLOAD'])))
    stamp = json.loads(bundle.read('stamp.json'))
    assert stamp == values['PUSHED_STAMP'] and (stamp['commit'], stamp['dirty']) == (head, True)
    assert sorted(bundle.namelist()) == sorted([stamp['wheel'], 'stamp.json']), 'only the code travels in the notebook'
    wheel = zipfile.ZipFile(io.BytesIO(bundle.read(stamp['wheel'])))
    assert wheel.read('smollm2_nb/serve/generate.py').decode().endswith(marker), 'the recorded upload carries the local edit'
    assert resp.version_number == 1 and len(body['text'].encode()) < SOURCE_LIMIT


def test_data_travels_as_a_dataset_and_no_source_reaches_1_mb(wheel):
    from smollm2_nb.ship.kaggle_client import data_files, kaggle_api, push_kernel
    local = data_files()
    assert sum(p.stat().st_size for p in local.values()) > SOURCE_LIMIT, 'embedded, this data alone would be refused'
    fake = FakeKaggle()
    with fake.installed():
        api = kaggle_api()
        _, _, pushed = push_kernel(api, src=ROOT, wheel=wheel, bundle_data=True, poll_s=0, out=io.StringIO())
        texts = [fake.json('SaveKernel')['text']]
        _, _, again = push_kernel(api, src=ROOT, wheel=wheel, bundle_data=True, resume=False, poll_s=0, out=io.StringIO())
        texts.append(fake.json('SaveKernel')['text'])
    ds = fake.datasets[f'{KID}-data']
    assert len(ds.versions) == 1, 'the second push found the same data there and uploaded nothing'
    assert {n: ds.versions[0][n] for n in local} == {n: p.read_bytes() for n, p in local.items()}
    assert 403 in [r.status_code for r, u in zip(fake.responses, fake.sent) if u.url.endswith('/GetDatasetStatus')], \
        'the dataset was unknown (403) and then, just created, still answered 403 once'
    for text in texts:
        assert len(text.encode()) < SOURCE_LIMIT
        assert notebook_vars(text)['DATA_SOURCE'] == f'{KID}-data'
    assert fake.json('SaveKernel')['datasetDataSources'] == [f'{KID}-data'] and pushed['data_source'] == again['data_source']


def test_a_source_of_1_mb_is_refused_before_anything_is_sent(tmp_path):
    from smollm2_nb.ship.kaggle_client import PushRefused, kaggle_api, push_kernel
    src = scratch_checkout(tmp_path / 'src')
    (src / 'smollm2_nb' / 'blob.py').write_text(f'BLOB = {os.urandom(700_000).hex()!r}\n')  # ~0.7 MB that does not compress
    fake = FakeKaggle()
    with fake.installed():
        with pytest.raises(PushRefused, match='refuses a kernel source of 1 MB or more'):
            push_kernel(kaggle_api(), folder=src / 'kaggle', src=src)
        assert 'SaveKernel' not in fake.calls()
        # what Kaggle itself answers to such a source (the fake's limit, sent with the client's own push)
        import requests
        (tmp_path / 'k').mkdir()
        (tmp_path / 'k' / 'kernel-metadata.json').write_text(json.dumps({'id': KID, 'title': 'smollm2-train', 'code_file': 'k.ipynb',
                                                                          'language': 'python', 'kernel_type': 'notebook'}))
        (tmp_path / 'k' / 'k.ipynb').write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': 'x' * SOURCE_LIMIT, 'metadata': {}}],
                                                            'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
        with pytest.raises(requests.HTTPError, match='less than 1 megabytes'):
            kaggle_api().kernels_push(str(tmp_path / 'k'))


@pytest.mark.parametrize('status', ['RUNNING', 'QUEUED'])
def test_push_refuses_to_chain_onto_a_running_version(status, wheel):
    from smollm2_nb.ship.kaggle_client import PushRefused, kaggle_api, push_kernel
    fake = FakeKaggle()
    ended(fake, 'COMPLETE', **run_output(8)); ended(fake, status)
    with fake.installed():
        with pytest.raises(PushRefused, match='--no-resume'):
            push_kernel(kaggle_api(), src=ROOT, wheel=wheel)
    assert fake.calls() == ['GetKernelSessionStatus'], 'refused before anything was sent'


def test_resume_skips_failed_versions_and_pins_the_newest_checkpoint(wheel):
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    fake = FakeKaggle()
    ended(fake, **run_output(8)); ended(fake, **run_output(12))
    ended(fake, 'ERROR', **{'smollm2-train.ipynb': b'{}'})  # failed before training (say, no GPU): no checkpoint, no resume record
    with fake.installed():
        _, resp, pushed = push_kernel(kaggle_api(), src=ROOT, wheel=wheel)
    body = fake.json('SaveKernel')
    assert (pushed['resume_from'], pushed['resume_step'], body['kernelDataSources']) == (f'{KID}/2', 12, [f'{KID}/2'])
    assert (notebook_vars(body['text'])['RESUME_FROM'], notebook_vars(body['text'])['RESUME_STEP']) == (f'{KID}/2', 12)
    assert resp.version_number == 4 and 'latest ended ERROR' in pushed['resume_note']


def test_after_a_failed_resume_the_checkpoint_is_carried_as_a_dataset(wheel):
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    fake = FakeKaggle()
    ended(fake, **run_output(8)); v2 = ended(fake, **run_output(12))
    ended(fake, 'ERROR', **{'resume_failed.json': b'{"source": "ada/smollm2-train/2"}', 'smollm2-train.ipynb': b'{}'})
    with fake.installed():
        _, resp, pushed = push_kernel(kaggle_api(), src=ROOT, wheel=wheel, poll_s=0, out=io.StringIO())
    carried = fake.datasets[f'{KID}-resume'].versions[-1]
    assert carried['step_0000012.pt'] == v2.output['run/checkpoints/step_0000012.pt'] and 'run.json' in carried
    body = fake.json('SaveKernel')
    assert (body['datasetDataSources'], body.get('kernelDataSources', [])) == ([f'{KID}-resume'], [])
    assert (pushed['resume_from'], pushed['resume_step']) == (f'dataset:{KID}-resume', 12) and resp.version_number == 4


def test_when_kaggle_refuses_the_kernel_input_the_push_carries_and_pushes_again(wheel):
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    fake = FakeKaggle()
    fake.invalid_kernel_sources = True
    ended(fake, **run_output(8))
    said = io.StringIO()
    with fake.installed():
        _, resp, pushed = push_kernel(kaggle_api(), src=ROOT, wheel=wheel, poll_s=0, out=said)
    first, second = fake.json('SaveKernel', 0), fake.json('SaveKernel', 1)
    assert first['kernelDataSources'] == [f'{KID}/1'] and second['datasetDataSources'] == [f'{KID}-resume']
    assert resp.version_number == 3 and pushed['resume_from'] == f'dataset:{KID}-resume' and 'pushing again' in said.getvalue()


def test_output_writes_nothing_outside_out_whatever_the_listing_holds(tmp_path, capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    out = tmp_path / 'home' / 'runs' / 'kaggle'
    out.mkdir(parents=True)
    (out / 'metrics.jsonl').write_text('my local metrics\n')
    evil = {'../escaped.txt': b'x', str(tmp_path / 'absolute.txt'): b'x', 'run/../../../up.txt': b'x', 'run/checkpoints/../../../../deep.txt': b'x'}
    fake = FakeKaggle()
    v = ended(fake, **{**run_output(500), **run_output(1000)})
    v.output.update({'run/best/model.safetensors': b'w' * 4096, **evil})
    before = {p for p in tmp_path.rglob('*')}
    with fake.installed():
        assert cli_kaggle(['output', '--out', str(out)]) == 1  # something was refused
    written = {p for p in tmp_path.rglob('*')} - before
    assert written and all(p.is_relative_to(out) for p in written), [p for p in written if not p.is_relative_to(out)]
    assert (out / 'checkpoints' / 'step_0001000.pt').read_bytes() == b'checkpoint 1000'
    assert not (out / 'checkpoints' / 'step_0000500.pt').exists(), 'older checkpoints are not fetched'
    assert (out / 'best' / 'model.safetensors').stat().st_size == 4096
    assert (out / 'metrics.jsonl').read_text() == 'my local metrics\n', 'an existing local file is never replaced'
    assert not (out / '.kaggle-download').exists()
    captured = capsys.readouterr()
    assert sorted(l.split("'")[1] for l in captured.err.splitlines() if l.startswith('refused')) == sorted(evil), captured.err
    assert 'kept your local' in captured.out and f'smollm2 train --out {out} --resume' in captured.out
    downloads = [r for r in fake.sent if r.url.startswith('https://storage.')]
    assert downloads and not any('step_0000500' in r.url for r in downloads)


def test_output_of_a_pinned_version_and_of_a_running_one(tmp_path, capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    fake = FakeKaggle()
    ended(fake, **run_output(8)); ended(fake, 'RUNNING')
    with fake.installed():
        assert cli_kaggle(['output', '--out', str(tmp_path / 'o')]) == 1
        assert 'still RUNNING' in capsys.readouterr().err and not (tmp_path / 'o').exists()
        assert cli_kaggle(['output', f'{KID}/1', '--out', str(tmp_path / 'v1')]) == 0
        assert cli_kaggle(['status', f'{KID}/1']) == 0 and capsys.readouterr().out.splitlines()[-1] == f'{KID}/1: COMPLETE'
        assert cli_kaggle(['status', 'ada/no-such-kernel']) == 1
    assert (tmp_path / 'v1' / 'checkpoints' / 'step_0000008.pt').exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'no such kernel' in err


def test_logs_follow_survives_two_stream_cuts_without_repeating_a_line(capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    fake = FakeKaggle()
    v = ended(fake, 'RUNNING')
    lines = [f'step {s}/5000 | loss {9 - s / 100:.4f} | 61,000 tok/s | ETA 2 h' for s in range(10, 70, 10)] + ["sample @ 60: 'ROMEO: hark'"]
    v.log = [{'stream_name': 'stdout', 'time': float(i), 'data': l + '\n'} for i, l in enumerate(lines)]
    fake.log_cuts = 2
    with fake.installed():
        assert cli_kaggle(['logs', '--follow']) == 0
    streams = [r for r in fake.sent if '/kernels/logs/stream/' in r.url]
    assert len(streams) == 3 and fake.log_cuts == 0, 'two connections were cut, the third ran to END_OF_LOG'
    assert capsys.readouterr().out.splitlines() == lines


def test_no_credentials_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    for k in [k for k in os.environ if k.startswith('KAGGLE_')]: monkeypatch.delenv(k)
    monkeypatch.setenv('HOME', str(tmp_path))
    assert cli_kaggle(['status']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'KAGGLE_API_TOKEN' in err


def test_first_carry_creates_its_dataset_through_the_403s(wheel, tmp_path):
    from smollm2_nb.run.checkpoint import Checkpoint, save_checkpoint
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    run = tmp_path / 'runs' / 'kaggle'
    ckpt = save_checkpoint(Checkpoint(step=700, config={}, model={}), run)
    (run / 'run.json').write_text('{"status": "stopped"}')
    fake = FakeKaggle()
    with fake.installed():
        _, resp, pushed = push_kernel(kaggle_api(), src=ROOT, wheel=wheel, carry=run, poll_s=0, out=io.StringIO())
    statuses = [r.status_code for r, q in zip(fake.responses, fake.sent) if q.url.endswith('/GetDatasetStatus')]
    assert statuses[:3] == [403, 403, 403] and statuses[-1] == 200, 'unknown, then (inside dataset_create_new) unknown, then just created'
    carried = fake.datasets[f'{KID}-resume'].versions[-1]
    assert carried[ckpt.name] == ckpt.read_bytes() and carried['run.json'] == b'{"status": "stopped"}'
    assert fake.json('SaveKernel')['datasetDataSources'] == [f'{KID}-resume'] and (pushed['resume_step'], resp.version_number) == (700, 1)


def test_a_prepared_corpus_travels_as_a_dataset_the_kernel_trains_on(wheel, tmp_path):
    "`smollm2 data prepare` writes dataset-metadata.json; Kaggle's client uploads the folder; `push --dataset` attaches it."
    from smollm2_nb.run.prepare import prepare
    from smollm2_nb.ship.kaggle_client import PushRefused, kaggle_api, push_kernel
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('To be, or not to be, that is the question.\n' * 50)
    out = tmp_path / 'fineweb-edu-1b'
    m = prepare(corpus, out, val_fraction=0.0, workers=1, progress=False)
    meta = json.loads((out / 'dataset-metadata.json').read_text())
    assert meta['id'] == 'INSERT_USERNAME/fineweb-edu-1b-smollm2-shards', meta
    meta['id'] = 'ada/fineweb-edu-1b'  # what the README says to do: your user name, any slug
    (out / 'dataset-metadata.json').write_text(json.dumps(meta))
    fake = FakeKaggle()
    fake.dataset_invisible_polls = 0  # uploaded a while before the push, not a second before it
    with fake.installed():
        api = kaggle_api()
        with pytest.raises(PushRefused, match='kaggle datasets create -p DIR'):  # not uploaded yet: refused before any push
            push_kernel(api, src=ROOT, wheel=wheel, resume=False, prepared_data='ada/fineweb-edu-1b', poll_s=0, out=io.StringIO())
        assert 'SaveKernel' not in fake.calls()
        api.dataset_create_new(str(out), public=False, quiet=True)  # `kaggle datasets create -p DIR`
        _, _, pushed = push_kernel(api, src=ROOT, wheel=wheel, resume=False, prepared_data='ada/fineweb-edu-1b', poll_s=0, out=io.StringIO())
    uploaded = fake.datasets['ada/fineweb-edu-1b'].versions[0]
    assert uploaded['manifest.json'] == (out / 'manifest.json').read_bytes()
    assert uploaded['train-000000.bin'] == (out / 'train-000000.bin').read_bytes() and m['splits']['train']['shards'][0]['tokens'] > 0
    sent = fake.json('SaveKernel')
    assert sent['datasetDataSources'] == ['ada/fineweb-edu-1b'] and pushed['prepared_data'] == 'ada/fineweb-edu-1b'
    assert notebook_vars(sent['text'])['PREPARED_DATA'] == 'ada/fineweb-edu-1b'
    assert "find_prepared(paths, PREPARED_DATA)" in sent['text'] and "{'data': str(data_dir)}" in sent['text']
