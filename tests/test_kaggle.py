"""The Kaggle kernel notebook, executed headless (papermill, as Kaggle does) on CPU in smoke mode.

/kaggle is redirected to a temp folder (SMOLLM2_KAGGLE_ROOT). The first run trains the tiny preset from scratch and
must leave a figure in the saved notebook and a checkpoint in /kaggle/working; a second run, with the first run's
output attached under /kaggle/input (as Kaggle does for `kernel_sources`), must resume from that checkpoint.
"""
import json, os, shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_NB = ROOT / 'kaggle' / 'smollm2-train.ipynb'
pm = pytest.importorskip('papermill')


def run_kernel(root: Path, steps: int, monkeypatch, tmp_path: Path, launcher: str = 'auto', nproc: int = 1) -> dict:
    "Execute the kernel notebook with /kaggle at `root`; returns the executed notebook."
    monkeypatch.setenv('SMOLLM2_KAGGLE_LAUNCHER', launcher)
    monkeypatch.setenv('SMOLLM2_KAGGLE_NPROC', str(nproc))
    monkeypatch.setenv('SMOLLM2_KAGGLE_SMOKE', '1')
    monkeypatch.setenv('SMOLLM2_KAGGLE_ROOT', str(root))
    monkeypatch.setenv('SMOLLM2_KAGGLE_STEPS', str(steps))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # tiny model on a shared CPU: one thread is faster
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    (root / 'working').mkdir(parents=True, exist_ok=True)
    out = tmp_path / f'executed-{root.name}.ipynb'
    pm.execute_notebook(str(KERNEL_NB), str(out), kernel_name='python3', cwd=str(root / 'working'),
                        progress_bar=False, execution_timeout=300)
    return json.loads(out.read_text())


def outputs(nb: dict, kind: str) -> list:
    return [o for c in nb['cells'] for o in c.get('outputs', []) if kind in o.get('data', {})]


def text(nb: dict) -> str:
    return '\n'.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))


def metrics(run_dir: Path) -> list:
    return [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines() if l.strip()]


def test_kernel_smoke_run_then_resume(tmp_path, monkeypatch):
    from smollm2_nb.checkpoint import latest_checkpoint, load_checkpoint
    # first version: nothing under /kaggle/input, trains from scratch
    first = tmp_path / 'kaggle1'
    nb1 = run_kernel(first, 8, monkeypatch, tmp_path)
    run1 = first / 'working' / 'run'
    assert 'starting from scratch' in text(nb1)
    assert outputs(nb1, 'image/png'), 'the saved notebook should hold the dashboard figure'
    ck1 = latest_checkpoint(run1)
    assert ck1 is not None and load_checkpoint(ck1)['step'] == 8
    assert json.loads((run1 / 'run.json').read_text())['status'] == 'finished'
    assert max(m['step'] for m in metrics(run1)) == 8

    # second version: the first one's output is attached under /kaggle/input/<slug>/; this time the trainer runs
    # as on Kaggle's 2 GPUs: 2 torchrun processes (here on CPU, gloo), the notebook following the run directory
    second = tmp_path / 'kaggle2'
    shutil.copytree(first / 'working', second / 'input' / 'smollm2-train')
    nb2 = run_kernel(second, 12, monkeypatch, tmp_path, launcher='torchrun', nproc=2)
    run2 = second / 'working' / 'run'
    assert 'resuming from' in text(nb2) and 'step_0000008' in text(nb2)
    assert outputs(nb2, 'image/png')
    ck2 = latest_checkpoint(run2)
    assert load_checkpoint(ck2)['step'] == 12
    steps = [m['step'] for m in metrics(run2)]
    assert min(steps) <= 8 < max(steps) == 12, 'the resumed run continues the first run\'s curve'
    assert json.loads((run2 / 'run.json').read_text())['status'] == 'finished'
    assert (run2 / 'train.log').exists() and (run2 / 'train_config.json').exists(), 'trained by the torchrun child'
    assert json.loads((run2 / 'run.json').read_text())['world_size'] == 2


def kernel_parameters() -> dict:
    "The values of the kernel notebook's papermill `parameters` cell."
    nb = json.loads(KERNEL_NB.read_text())
    cells = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cells) == 1, 'the kernel notebook needs exactly one cell tagged "parameters" (papermill)'
    ns = {}
    exec(''.join(cells[0]['source']), ns)
    return {k: v for k, v in ns.items() if k.isupper()}


def test_kernel_defaults_fit_a_t4():
    from smollm2_nb.config import get_config
    from smollm2_nb.params import training_memory
    from smollm2_nb.train import choose_precision
    p = kernel_parameters()
    precision = choose_precision('cuda', (7, 5))  # what a T4 gets
    mem = training_memory(get_config(p['PRESET']), p['BATCH_SIZE'], p['SEQ_LEN'], precision)['total']
    assert mem < 14 * 2**30, f"{p['BATCH_SIZE']}x{p['SEQ_LEN']} needs ~{mem / 2**30:.1f} GiB; a T4 has 15 GiB"
    assert p['TIME_BUDGET_H'] <= 11.5, 'Kaggle stops GPU sessions at 12 h and then saves nothing'
    assert p['SMOLLM2_NB_SPEC'].startswith('smollm2_nb @ git+') and '@' in p['SMOLLM2_NB_SPEC'].split('git+')[1], \
        'the kernel installs smollm2_nb pinned to a tag or commit'
