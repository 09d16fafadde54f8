"""The first-step watchdog with real torchrun launches on CPU (gloo).

The workers simulate an NCCL all-reduce that never completes (SMOLLM2_KAGGLE_SIMULATE_HANG=always: every
multi-process launch hangs before its first step). `run_training` must stop the hung launch, retry with
NCCL_P2P_DISABLE=1, then fall back to one process, say so, and finish the run.
"""
import io, json

import pytest


def test_hung_first_step_retries_without_p2p_then_falls_back_to_one_process(tmp_path, monkeypatch):
    from smollm2_nb.train.launch import HANG_ENV, run_training; from smollm2_nb.ship.kaggle_kernel import kaggle_paths, kernel_config
    monkeypatch.setenv(HANG_ENV, 'always')
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    paths = kaggle_paths(tmp_path)
    cfg = kernel_config(paths, smoke=True)
    log = io.StringIO()
    summary = run_training(cfg, nproc=2, launcher='torchrun', first_step_timeout_s=60, out=log)
    said = log.getvalue()
    assert 'launching 2 processes (NCCL)' in said
    assert 'launching 2 processes, NCCL_P2P_DISABLE=1' in said
    assert said.count('no first step within 60 s') == 2 and 'launching one process on one GPU' in said, said[-3000:]
    assert summary['status'] == 'finished' and summary['step'] == cfg.steps, summary
    info = json.loads((paths.run_dir / 'run.json').read_text())
    assert info['world_size'] == 1 and info['train_config']['grad_accum'] == 2 * cfg.grad_accum, 'same global batch on one process'
