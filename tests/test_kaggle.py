"""The Kaggle kernel as pushed, executed headless (papermill, as Kaggle does) on CPU in smoke mode.

Each run starts from what `smollm2 kaggle push` really sends: the push goes through the kaggle package's own client
with only the HTTP transport recorded (tests/kaggle_fake.py), and the notebook is taken from the recorded request.
It runs in a fresh virtual environment that has the test environment's packages (as Kaggle's image has torch) but
not smollm2_nb: the kernel must install the wheel embedded in the push. /kaggle is redirected to a temp folder.
"""
import json, os, shutil, subprocess, sysconfig, venv
from pathlib import Path

import pytest

from kaggle_fake import offline_kaggle

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip('papermill'); pytest.importorskip('kaggle')
SAVED = {'ref': '/code/ada/smollm2-train', 'url': 'https://www.kaggle.com/code/ada/smollm2-train', 'versionNumber': 1}


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


def pushed_notebook(tmp_path: Path, name: str, **replies) -> tuple[Path, dict]:
    "Push the working tree through the recorded client; returns the notebook as sent and what push_kernel reported."
    from smollm2_nb.ship.kaggle_client import kaggle_api, push_kernel
    with offline_kaggle(SaveKernel=SAVED, **replies) as rec:
        meta, resp, pushed = push_kernel(kaggle_api(), src=ROOT)
    body = rec.json('SaveKernel')
    path = tmp_path / f'{name}.ipynb'
    path.write_text(body['text'])
    return path, {**pushed, 'meta': meta, 'body': body}


def run_kernel(py: Path, nb: Path, root: Path, steps: int, tmp_path: Path, nproc: int = 1, launcher: str = 'auto'):
    "Execute `nb` with the kernel venv's python and /kaggle at `root`; returns (returncode, executed notebook, stderr)."
    (root / 'working').mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(SMOLLM2_KAGGLE_SMOKE='1', SMOLLM2_KAGGLE_ROOT=str(root), SMOLLM2_KAGGLE_STEPS=str(steps),
               SMOLLM2_KAGGLE_NPROC=str(nproc), SMOLLM2_KAGGLE_LAUNCHER=launcher, MPLBACKEND='Agg', OMP_NUM_THREADS='1',
               PATH=f"{py.parent}{os.pathsep}{os.environ['PATH']}", PIP_NO_INDEX='1')
    out = tmp_path / f'executed-{root.name}.ipynb'
    r = subprocess.run([py, '-m', 'papermill', str(nb), str(out), '-k', 'python3', '--cwd', str(root / 'working'),
                        '--no-progress-bar', '--execution-timeout', '600'], env=env, capture_output=True, text=True)
    return r.returncode, json.loads(out.read_text()) if out.exists() else None, r.stderr


def text(nb: dict) -> str:
    return '\n'.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')) + o.get('evalue', '')
                     for c in nb['cells'] for o in c.get('outputs', []))


def metrics(run_dir: Path) -> list:
    return [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines() if l.strip()]


def output_listing(working: Path) -> dict:
    "The kernel output as Kaggle lists it (file name relative to /kaggle/working -> URL)."
    return {'files': [{'fileName': p.relative_to(working).as_posix(), 'url': f'https://fake/{p.name}'}
                      for p in sorted(working.rglob('*')) if p.is_file()]}


def test_pushed_kernel_trains_resumes_and_refuses_to_restart(kernel_env, tmp_path):
    from smollm2_nb.run.checkpoint import find_checkpoints, read_checkpoint; from smollm2_nb.serve.load import load_model

    # version 1: a kernel that never ran, so nothing to resume
    nb1, pushed1 = pushed_notebook(tmp_path, 'v1', GetKernelSessionStatus={'code': 404, 'message': 'Notebook not found'})
    assert 'git+' not in nb1.read_text() and pushed1['resume_from'] is None
    first = tmp_path / 'kaggle1'
    code, ex1, err = run_kernel(kernel_env, nb1, first, 8, tmp_path)
    assert code == 0, err[-3000:]
    out1 = text(ex1)
    assert 'as pushed' in out1 and str(kernel_env.parent.parent) in out1, 'the kernel runs the installed wheel, in its own venv'
    assert 'starting from step 0' in out1
    run1 = first / 'working' / 'run'
    assert [c.name for c in find_checkpoints(run1)] == ['step_0000008.pt'], 'only the newest checkpoint is kept'
    assert {'run.json', 'metrics.jsonl', 'samples.jsonl', 'dashboard.png'} <= {p.name for p in run1.iterdir()}
    weights = run1 / ('best' if (run1 / 'best').exists() else 'model')
    assert (weights / 'model.safetensors').exists() and load_model(weights)[0] is not None
    assert json.loads((run1 / 'run.json').read_text())['status'] == 'finished'
    assert 'step 8/8 | loss' in out1 and 'sample @ 8' in out1, 'progress lines and samples reach stdout'
    images = [o for c in ex1['cells'] for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert images, 'the saved notebook keeps the final loss plot'
    assert not any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for c in ex1['cells'] for o in c.get('outputs', []))

    # version 2: the push asks Kaggle about version 1 and names it, at step 8; its output is mounted in the new layout;
    # this time the trainer runs as on two GPUs: 2 torchrun processes (gloo on CPU)
    nb2, pushed2 = pushed_notebook(tmp_path, 'v2', GetKernelSessionStatus={'status': 'COMPLETE'},
                                   ListKernelSessionOutput=output_listing(first / 'working'))
    assert (pushed2['resume_from'], pushed2['resume_step']) == ('ada/smollm2-train', 8)
    assert pushed2['body']['kernelDataSources'] == ['ada/smollm2-train']
    second = tmp_path / 'kaggle2'
    shutil.copytree(first / 'working', second / 'input' / 'notebooks' / 'ada' / 'smollm2-train')
    code, ex2, err = run_kernel(kernel_env, nb2, second, 12, tmp_path, nproc=2, launcher='torchrun')
    assert code == 0, err[-3000:]
    assert 'resuming from' in text(ex2) and 'step_0000008' in text(ex2)
    run2 = second / 'working' / 'run'
    assert [c.name for c in find_checkpoints(run2)] == ['step_0000012.pt']
    assert read_checkpoint(run2).step == 12
    steps = [m['step'] for m in metrics(run2)]
    assert min(steps) <= 8 < max(steps) == 12, "the resumed run continues the first run's curve"
    assert json.loads((run2 / 'run.json').read_text())['world_size'] == 2

    # version 3 told to resume, with nothing mounted: it stops with the reason instead of starting at step 0
    third = tmp_path / 'kaggle3'
    code, ex3, err = run_kernel(kernel_env, nb2, third, 12, tmp_path)
    assert code != 0
    assert 'STOP: told to resume from ada/smollm2-train (step 8)' in text(ex3), text(ex3)[-2000:]
    assert not (third / 'working' / 'run' / 'checkpoints').exists(), 'nothing was trained'


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
    assert (p['SMOLLM2_NB_SPEC'], p['CODE_PAYLOAD'], p['RESUME_FROM']) == ('', '', ''), 'push fills these in'
