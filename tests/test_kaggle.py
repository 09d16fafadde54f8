"""A chain of Kaggle versions, each pushed and then executed headless (papermill, as Kaggle does) on CPU in smoke mode.

Each push goes through the kaggle package's own client to the Kaggle of tests/kaggle_fake.py, which keeps what was
pushed; the test then plays Kaggle's runner: it mounts what the version attached under /kaggle/input (redirected to a
temp folder), runs the notebook taken from the push, and stores /kaggle/working as the version's output. The notebook
runs in a fresh virtual environment that has the test environment's packages (as Kaggle's image has torch) but not
smollm2_nb, no tokenizer or corpus of its own and no package index: the kernel must install the embedded wheel and
read the data from the attached dataset.
"""
import io, json, os, subprocess, sysconfig, venv
from pathlib import Path

import pytest

from kaggle_fake import FakeKaggle

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip('papermill'); pytest.importorskip('kaggle')
KID = 'ada/smollm2-train'


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory) -> Path:
    "A fresh venv seeing this environment's packages (a .pth line), without smollm2_nb; returns its python."
    d = tmp_path_factory.mktemp('kernel_venv')
    venv.create(d, with_pip=True)
    py = d / 'bin' / 'python'
    site = Path(subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / 'test_env.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([py, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools'], check=True)  # the image's own one, as on Kaggle
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    r = subprocess.run([py, '-c', 'import importlib.util as u; print(u.find_spec("smollm2_nb"))'], capture_output=True, text=True,
                       cwd=d, env=env)
    assert r.stdout.strip() == 'None', 'the kernel venv must not see the checkout'
    return py


def run_kernel(py: Path, nb: Path, root: Path, steps: int, tmp_path: Path, nproc: int = 1, launcher: str = 'auto',
               interactive: bool = False):
    "Execute `nb` with the kernel venv's python and /kaggle at `root`; returns (returncode, executed notebook, stderr)."
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'SMOLLM2_TOKENIZER', 'SMOLLM2_SHAKESPEARE')}
    env.update(SMOLLM2_KAGGLE_SMOKE='1', SMOLLM2_KAGGLE_ROOT=str(root), SMOLLM2_KAGGLE_STEPS=str(steps),
               SMOLLM2_KAGGLE_NPROC=str(nproc), SMOLLM2_KAGGLE_LAUNCHER=launcher, MPLBACKEND='Agg', OMP_NUM_THREADS='1',
               PATH=f"{py.parent}{os.pathsep}{os.environ['PATH']}", PIP_NO_INDEX='1',
               KAGGLE_KERNEL_RUN_TYPE='Interactive' if interactive else 'Batch')
    out = tmp_path / f'executed-{root.name}.ipynb'
    r = subprocess.run([py, '-m', 'papermill', str(nb), str(out), '-k', 'python3', '--cwd', str(root / 'working'),
                        '--no-progress-bar', '--execution-timeout', '600'], env=env, capture_output=True, text=True)
    return r.returncode, json.loads(out.read_text()) if out.exists() else None, r.stderr


def text(nb: dict) -> str:
    return '\n'.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')) + o.get('evalue', '')
                     for c in nb['cells'] for o in c.get('outputs', []))


def metrics(run_dir: Path) -> list:
    return [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines() if l.strip()]


def outputs_with(nb: dict, mime: str) -> list:
    return [o for c in nb['cells'] for o in c.get('outputs', []) if mime in o.get('data', {})]


def push_and_run(fake, kernel_env, wheel, tmp_path, steps, push: dict | None = None, **run):
    "`smollm2 kaggle push --bundle-data` (through the client), then run that version as Kaggle would; returns what happened."
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    with fake.installed():
        meta, resp, pushed = push_kernel(kaggle_api(), src=ROOT, wheel=wheel, bundle_data=True, poll_s=0, out=io.StringIO(), **(push or {}))
    v = fake.version(f'{KID}/{resp.version_number}')
    root = tmp_path / f'kaggle-v{v.number}'
    fake.start_version(KID, root, v.number)  # /kaggle/input holds what this version attached (and Kaggle mounted)
    nb = tmp_path / f'pushed-v{v.number}.ipynb'
    nb.write_text(v.request['text'])
    code, executed, err = run_kernel(kernel_env, nb, root, steps, tmp_path, **run)
    fake.finish_version(v, root / 'working', code == 0, text(executed) if executed else err)
    return dict(pushed=pushed, version=v, code=code, nb=executed, err=err, out=text(executed) if executed else '', run=root / 'working' / 'run')


def test_chain_trains_resumes_survives_a_failed_resume_and_resumes_from_the_last_checkpoint(kernel_env, tmp_path):
    from smollm2_nb.run.checkpoint import find_checkpoints, read_checkpoint
    from smollm2_nb.serve.load import load_model
    from smollm2_nb.ship.kaggle_client import build_wheel
    wheel = build_wheel(ROOT, tmp_path / 'dist')
    fake = FakeKaggle()

    # v1: the first push (Kaggle answers 403 for the unknown kernel and the unknown data dataset); trains from step 0,
    # reading the tokenizer and corpus from the attached dataset, installing nothing else
    v1 = push_and_run(fake, kernel_env, wheel, tmp_path, 8)
    assert v1['code'] == 0, v1['err'][-3000:]
    assert v1['pushed']['resume_from'] is None and 'starting from step 0' in v1['out']
    assert 'as pushed' in v1['out'] and str(kernel_env.parent.parent) in v1['out'], 'the kernel runs the installed wheel, in its own venv'
    assert 'all requirements present: nothing else installed' in v1['out']
    assert f'data from the dataset {KID}-data' in v1['out']
    assert '/datasets/ada/smollm2-train-data' in json.loads((v1['run'] / 'run.json').read_text())['tokenizer']
    assert [c.name for c in find_checkpoints(v1['run'])] == ['step_0000008.pt'], 'only the newest checkpoint is kept'
    assert {'run.json', 'metrics.jsonl', 'samples.jsonl', 'dashboard.png'} <= {p.name for p in v1['run'].iterdir()}
    weights = v1['run'] / ('best' if (v1['run'] / 'best').exists() else 'model')
    assert (weights / 'model.safetensors').exists() and load_model(weights)[0] is not None
    assert 'step 8/8 | loss' in v1['out'] and 'sample @ 8' in v1['out'], 'progress lines and samples reach stdout'
    assert outputs_with(v1['nb'], 'image/png'), 'the saved notebook keeps the final loss plot'
    assert not outputs_with(v1['nb'], 'application/vnd.jupyter.widget-view+json'), 'a batch run leaves no widget stubs'

    # v2: pinned to version 1 at step 8, mounted; trains as on two GPUs (2 torchrun processes, gloo on CPU)
    v2 = push_and_run(fake, kernel_env, wheel, tmp_path, 12, nproc=2, launcher='torchrun')
    assert (v2['pushed']['resume_from'], v2['pushed']['resume_step']) == (f'{KID}/1', 8)
    assert v2['version'].request['kernelDataSources'] == [f'{KID}/1']
    assert v2['code'] == 0, v2['err'][-3000:]
    assert 'resuming from' in v2['out'] and 'step_0000008' in v2['out']
    assert read_checkpoint(v2['run']).step == 12 and json.loads((v2['run'] / 'run.json').read_text())['world_size'] == 2
    steps = [m['step'] for m in metrics(v2['run'])]
    assert min(steps) <= 8 < max(steps) == 12, "the resumed run continues the first run's curve"

    # v3: pinned to version 2 at step 12, but Kaggle mounts nothing: it stops at its resume check, leaving the record
    fake.mount_kernel_sources = False
    v3 = push_and_run(fake, kernel_env, wheel, tmp_path, 16)
    assert (v3['pushed']['resume_from'], v3['pushed']['resume_step']) == (f'{KID}/2', 12)
    assert v3['code'] != 0 and v3['version'].status == 'ERROR'
    assert f'STOP: told to resume from {KID}/2 (step 12)' in v3['out'], v3['out'][-2000:]
    assert 'resume_failed.json' in v3['version'].output and not any('checkpoints/' in n for n in v3['version'].output)

    # v4: the failed v3 does not block it; the push finds v2's checkpoint and, since v3 found the kernel output
    # unmounted, carries it as a dataset; run interactively, the live dashboard follows the training
    v4 = push_and_run(fake, kernel_env, wheel, tmp_path, 16, interactive=True)
    assert (v4['pushed']['resume_from'], v4['pushed']['resume_step']) == (f'dataset:{KID}-resume', 12)
    assert v4['version'].request['datasetDataSources'] == [f'{KID}-resume', f'{KID}-data']
    assert v4['code'] == 0, v4['err'][-3000:]
    assert read_checkpoint(v4['run']).step == 16
    steps = [m['step'] for m in metrics(v4['run'])]
    assert min(steps) <= 8 and 12 in steps and max(steps) == 16, "v4 continues v2's curve (v1's steps included), not v3's"
    assert outputs_with(v4['nb'], 'application/vnd.jupyter.widget-view+json'), 'the interactive run shows the live dashboard'
    assert outputs_with(v4['nb'], 'image/png'), 'and ends with the static figure'
    assert fake.calls().count('SaveKernel') == 4


def test_kernel_trains_on_a_prepared_dataset_it_was_pushed_with(kernel_env, tmp_path):
    "`smollm2 data prepare` -> `kaggle datasets create -p DIR` -> `smollm2 kaggle push --dataset`: the kernel trains on the mounted shards."
    from smollm2_nb.run.data import shakespeare_path
    from smollm2_nb.run.prepare import prepare
    from smollm2_nb.ship.kaggle_client import build_wheel, kaggle_api
    speeches = [s for s in shakespeare_path().read_text().split('\n\n') if s.strip()]
    (tmp_path / 'speeches.jsonl').write_text(''.join(json.dumps({'text': s}) + '\n' for s in speeches))
    out = tmp_path / 'speeches'
    m = prepare(tmp_path / 'speeches.jsonl', out, val_fraction=0.05, shard_tokens=20_000, workers=1, progress=False)
    meta = json.loads((out / 'dataset-metadata.json').read_text())
    (out / 'dataset-metadata.json').write_text(json.dumps(dict(meta, id='ada/speeches')))  # the README's sed: your name, a slug
    fake = FakeKaggle()
    fake.dataset_invisible_polls = 0
    with fake.installed(): kaggle_api().dataset_create_new(str(out), public=False, quiet=True)
    v1 = push_and_run(fake, kernel_env, build_wheel(ROOT, tmp_path / 'dist'), tmp_path, 8, push=dict(prepared_data='ada/speeches'))
    assert v1['code'] == 0, v1['err'][-3000:] + v1['out'][-3000:]
    assert sorted(v1['version'].request['datasetDataSources']) == sorted(['ada/speeches', f'{KID}-data'])
    run = json.loads((v1['run'] / 'run.json').read_text())
    mounted = Path(run['data'][0])
    assert mounted.parent.parent.name == 'datasets' and (mounted / 'manifest.json').read_bytes() == (out / 'manifest.json').read_bytes()
    assert run['datasets'][0]['kind'] == 'prepared' and run['datasets'][0]['shards']['train'] == len(m['splits']['train']['shards']) > 1
    assert [x['step'] for x in metrics(v1['run'])][-1] == 8


def kernel_parameters() -> dict:
    "The values of the repository kernel notebook's papermill `parameters` cell."
    nb = json.loads((ROOT / 'kaggle' / 'smollm2-train.ipynb').read_text())
    cells = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cells) == 1, 'the kernel notebook needs exactly one cell tagged "parameters" (papermill)'
    ns = {}
    exec(''.join(cells[0]['source']), ns)
    return {k: v for k, v in ns.items() if k.isupper()}


def test_kernel_defaults_fit_a_t4_and_install_nothing_from_git():
    from smollm2_nb.model.config import get_config
    from smollm2_nb.model.params import training_memory
    from smollm2_nb.model.precision import choose_precision
    p = kernel_parameters()
    precision = choose_precision('cuda', (7, 5))  # what a T4 gets
    mem = training_memory(get_config(p['PRESET']), p['BATCH_SIZE'], p['SEQ_LEN'], precision)['total']
    assert mem < 14 * 2**30, f"{p['BATCH_SIZE']}x{p['SEQ_LEN']} needs ~{mem / 2**30:.1f} GiB; a T4 has 15 GiB"
    assert p['TIME_BUDGET_H'] <= 11.5, 'Kaggle stops GPU sessions at 12 h and then saves nothing'
    assert (p['SMOLLM2_NB_SPEC'], p['CODE_PAYLOAD'], p['RESUME_FROM'], p['DATA_SOURCE']) == ('', '', '', ''), 'push fills these in'
