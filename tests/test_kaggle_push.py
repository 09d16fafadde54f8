"""`smollm2 kaggle push` and `output` through the kaggle package's own client, with only the HTTP transport recorded.

The push test works on a copy of the tracked tree committed to a scratch git repository, then edits one line: the
recorded SaveKernel request must carry that edit inside the wheel embedded in the notebook, and no git URL.
"""
import base64, io, json, subprocess, zipfile
from pathlib import Path

import pytest

from kaggle_fake import offline_kaggle

pytest.importorskip('kaggle')
ROOT = Path(__file__).resolve().parents[1]
SAVED = {'ref': '/code/ada/smollm2-train', 'url': 'https://www.kaggle.com/code/ada/smollm2-train', 'versionNumber': 7}


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


def test_push_ships_the_working_tree_with_a_local_edit(tmp_path):
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    src = scratch_checkout(tmp_path / 'src')
    head = subprocess.run(['git', '-C', str(src), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    marker = '# local edit 7c1e: this line must reach the kernel\n'
    target = src / 'smollm2_nb' / 'generate.py'
    target.write_text(target.read_text() + marker)

    with offline_kaggle(SaveKernel=SAVED, GetKernelSessionStatus={'code': 404, 'message': 'Notebook not found'}) as rec:
        meta, resp, pushed = push_kernel(kaggle_api(), folder=src / 'kaggle', src=src, bundle_data=True)
    assert rec.calls() == ['GetKernelSessionStatus', 'SaveKernel'], rec.calls()
    body = rec.json('SaveKernel')
    assert (body['slug'], body['enableGpu'], body['machineShape']) == ('ada/smollm2-train', True, 'NvidiaTeslaT4')
    assert 'git+' not in body['text'], 'no git URL is installed'
    values = notebook_vars(body['text'])
    assert values['SMOLLM2_NB_SPEC'] == '' and values['RESUME_FROM'] == ''
    bundle = zipfile.ZipFile(io.BytesIO(base64.b64decode(values['CODE_PAYLOAD'])))
    stamp = json.loads(bundle.read('stamp.json'))
    assert stamp == values['PUSHED_STAMP'] and (stamp['commit'], stamp['dirty']) == (head, True)
    wheel = zipfile.ZipFile(io.BytesIO(bundle.read(stamp['wheel'])))
    assert wheel.read('smollm2_nb/generate.py').decode().endswith(marker), 'the recorded upload carries the local edit'
    assert {'tokenizer/tokenizer.json', 'tinyshakespeare.txt'} <= set(bundle.namelist()), '--bundle-data'
    assert resp.version_number == 7


@pytest.mark.parametrize('status', ['RUNNING', 'QUEUED', 'ERROR'])
def test_push_refuses_to_chain_onto_a_running_or_failed_version(status):
    from smollm2_nb.ship.kaggle_client import PushRefused, kaggle_api, push_kernel
    with offline_kaggle(GetKernelSessionStatus={'status': status}) as rec:
        with pytest.raises(PushRefused, match='--no-resume'):
            push_kernel(kaggle_api())
    assert rec.calls() == ['GetKernelSessionStatus'], 'refused before anything was built or sent'


def test_output_fetches_newest_checkpoint_and_small_files_streamed_keeping_local_files(tmp_path, capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    files = {'run/run.json': b'{"status": "stopped"}', 'run/metrics.jsonl': b'{"step": 1000, "loss": 3.0}\n',
             'run/samples.jsonl': b'{"step": 1000, "text": "ROMEO:"}\n', 'run/dashboard.png': b'\x89PNG',
             'run/best/model.safetensors': b'w' * 4096, 'run/best/config.json': b'{}',
             'run/checkpoints/step_0000500.pt': b'old' * 100, 'run/checkpoints/step_0001000.pt': b'ckpt' * 5000,
             'smollm2-train.ipynb': b'{}'}
    listing = {'files': [{'fileName': n, 'url': f'https://storage.fake/{n}'} for n in files]}
    out = tmp_path / 'runs' / 'kaggle'
    out.mkdir(parents=True)
    (out / 'metrics.jsonl').write_text('my local metrics\n')
    with offline_kaggle(GetKernelSessionStatus={'status': 'COMPLETE'}, ListKernelSessionOutput=listing,
                        **{f'https://storage.fake/{n}': b for n, b in files.items()}) as rec:
        assert cli_kaggle(['output', '--out', str(out)]) == 0
    downloads = [(r.url, stream) for r, stream in rec.sent if r.url.startswith('https://storage.fake/')]
    assert 'https://storage.fake/run/checkpoints/step_0000500.pt' not in [u for u, _ in downloads], 'older checkpoints are not fetched'
    assert downloads and all(stream for _, stream in downloads), 'every download is streamed'
    assert (out / 'checkpoints' / 'step_0001000.pt').read_bytes() == files['run/checkpoints/step_0001000.pt']
    assert (out / 'best' / 'model.safetensors').stat().st_size == 4096
    assert (out / 'metrics.jsonl').read_text() == 'my local metrics\n', 'an existing local file is never replaced'
    assert not list(out.rglob('*.part'))
    said = capsys.readouterr().out
    assert 'kept your local' in said and f'smollm2 train --out {out} --resume' in said


def test_output_of_a_running_version_says_so(tmp_path, capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    with offline_kaggle(GetKernelSessionStatus={'status': 'RUNNING'}):
        assert cli_kaggle(['output', '--out', str(tmp_path / 'o')]) == 1
    err = capsys.readouterr().err
    assert 'still RUNNING' in err and len(err.strip().splitlines()) == 1 and not (tmp_path / 'o').exists()


def test_logs_follow_prints_the_kernels_progress_lines(capsys):
    from smollm2_nb.ship.kaggle_client import cli_kaggle
    events = [{'stream_name': 'stdout', 'time': 1.0, 'data': 'step 50/5000 | loss 6.1234 | 61,000 tok/s | MFU 31.0% | ETA 2 h\n'},
              {'stream_name': 'stdout', 'time': 2.0, 'data': "sample @ 500: 'ROMEO: hark'\n"}]
    with offline_kaggle(**{'https://api.kaggle.com/v1/kernels/logs/stream/ada/smollm2-train': json.dumps(events).encode()}) as rec:
        assert cli_kaggle(['logs', '--follow']) == 0
    assert [r.url for r, _ in rec.sent] == ['https://api.kaggle.com/v1/kernels/logs/stream/ada/smollm2-train']
    assert capsys.readouterr().out.splitlines() == ['step 50/5000 | loss 6.1234 | 61,000 tok/s | MFU 31.0% | ETA 2 h',
                                                    "sample @ 500: 'ROMEO: hark'"]
