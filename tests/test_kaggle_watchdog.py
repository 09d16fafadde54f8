"""The launch watchdog with real torchrun launches on CPU (gloo).

It times the workers' first all-reduce, not their first step. Workers that simulate an NCCL all-reduce that never
completes (SMOLLM2_KAGGLE_SIMULATE_HANG=always) must be stopped, retried with NCCL_P2P_DISABLE=1, then replaced by one
process that finishes the run. Workers whose start after that all-reduce takes longer than the timeout
(SMOLLM2_KAGGLE_SIMULATE_SLOW_START, standing in for torch.compile's first steps) must not be stopped.
"""
import io, json, os
from pathlib import Path

FAKES = Path(__file__).parent / 'fakes'   # sitecustomize.py: the hang and the slow start, in the workers only

def with_fakes(monkeypatch):
    "Workers started from here load tests/fakes/sitecustomize.py, which simulates what the environment variables ask."
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(FAKES), os.environ.get('PYTHONPATH')])))


TIMEOUT_S = 30  # a 2-process gloo all-reduce under torchrun took ~14 s on a busy 2-core x86 CPU


def test_hung_all_reduce_retries_without_p2p_then_falls_back_to_one_process(tmp_path, monkeypatch):
    from smollm2_nb.ship.kaggle_kernel import kaggle_paths, kernel_config
    from smollm2_nb.train.launch import HANG_ENV, run_training
    monkeypatch.setenv(HANG_ENV, 'always'); with_fakes(monkeypatch)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    paths = kaggle_paths(tmp_path)
    cfg = kernel_config(paths, smoke=True)
    log = io.StringIO()
    summary = run_training(cfg, nproc=2, launcher='torchrun', first_step_timeout_s=TIMEOUT_S, out=log)
    said = log.getvalue()
    assert 'launching 2 processes (NCCL)' in said
    assert 'launching 2 processes, NCCL_P2P_DISABLE=1' in said
    assert said.count(f'no all-reduce within {TIMEOUT_S} s') == 2 and 'launching one process on one GPU' in said, said[-3000:]
    assert summary['status'] == 'finished' and summary['step'] == cfg.steps, summary
    info = json.loads((paths.run_dir / 'run.json').read_text())
    assert info['world_size'] == 1 and info['train_config']['grad_accum'] == 2 * cfg.grad_accum, 'same global batch on one process'


def test_a_slow_start_after_the_all_reduce_is_not_taken_for_a_hang(tmp_path, monkeypatch):
    from smollm2_nb.ship.kaggle_kernel import kaggle_paths, kernel_config
    from smollm2_nb.train.launch import SLOW_START_ENV, run_training
    monkeypatch.setenv(SLOW_START_ENV, str(TIMEOUT_S + 5)); with_fakes(monkeypatch)  # longer than the watchdog's limit, like a long compile
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    paths = kaggle_paths(tmp_path)
    cfg = kernel_config(paths, smoke=True)
    log = io.StringIO()
    summary = run_training(cfg, nproc=2, launcher='torchrun', first_step_timeout_s=TIMEOUT_S, out=log)
    said = log.getvalue()
    assert 'no all-reduce within' not in said and 'launching one process' not in said, said[-3000:]
    assert summary['status'] == 'finished' and summary['step'] == cfg.steps, summary
    assert json.loads((paths.run_dir / 'run.json').read_text())['world_size'] == 2, 'both workers trained'


def test_the_double_reads_the_names_the_library_spells():
    from smollm2_nb.train import launch
    src = (FAKES / 'sitecustomize.py').read_text()
    assert f"HANG_ENV, SLOW_START_ENV = {launch.HANG_ENV!r}, {launch.SLOW_START_ENV!r}" in src
    assert not hasattr(launch, '_simulate_hang')   # the library holds no test double
