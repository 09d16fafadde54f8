"""The trainer under attack, through the real `smollm2` command in a subprocess: signals, divergence, damaged
checkpoints, a second trainer on the same run dir, a disk that refuses a write."""
import json, os, resource, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from smollm2_nb.run.checkpoint import find_checkpoints, read_checkpoint, nonfinite_tensors

TINY = ['--preset', 'tiny', '--batch-size', '2', '--seq-len', '32', '--lr', '3e-3', '--warmup-steps', '2',
        '--eval-every', '0', '--sample-every', '0', '--no-progress']

def _env():
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')}
    env.update(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1')
    return env

def smollm2(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=240, **kw)

def strict_jsonl(path: Path) -> list[dict]:
    "Records of a .jsonl file, refusing the bare NaN/Infinity that Python's json would accept."
    def no_constants(c): raise ValueError(f'non-JSON constant {c} in {path}')
    return [json.loads(l, parse_constant=no_constants) for l in path.read_text().splitlines() if l.strip()]

def one_line_error(r: subprocess.CompletedProcess, contains: str):
    assert r.returncode != 0, r.stdout
    assert 'Traceback' not in r.stderr, r.stderr
    assert contains in r.stderr, r.stderr

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_with_a_checkpoint_and_resume_is_exact(tmp_path, sig):
    run = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'smollm2_nb.cli', 'train', *TINY, '--steps', '300', '--ckpt-every', '1000',
                          '--log-every', '1', '--out', str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    metrics = run / 'metrics.jsonl'
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3): time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, (p.returncode, err)
    assert 'Traceback' not in err, err
    assert 'resume with: smollm2 train --resume' in out, out
    info = json.loads((run / 'run.json').read_text())
    assert info['status'] == 'stopped' and info['stop_reason'] == sig.name
    stopped_at = info['step']
    assert 3 <= stopped_at < 300
    assert read_checkpoint(find_checkpoints(run)[-1]).step == stopped_at

    # resume to 4 steps past the stop, and compare with an uninterrupted run of the same schedule
    r = smollm2('train', '--resume', run, '--steps', stopped_at + 4)
    assert r.returncode == 0, r.stderr
    ref = smollm2('train', *TINY, '--steps', stopped_at + 4, '--schedule-steps', 300, '--ckpt-every', 1000, '--out', tmp_path / 'ref')
    assert ref.returncode == 0, ref.stderr
    got, want = strict_jsonl(metrics), strict_jsonl(tmp_path / 'ref' / 'metrics.jsonl')
    assert [m['step'] for m in got] == list(range(1, stopped_at + 5))
    assert [m['loss'] for m in got] == [m['loss'] for m in want]      # bit for bit
    assert [m['lr'] for m in got] == [m['lr'] for m in want]

def test_divergence_never_leaves_a_nonfinite_checkpoint(tmp_path):
    run = tmp_path / 'nan'
    r = smollm2('train', *TINY, '--steps', '60', '--lr', '1e4', '--warmup-steps', '0', '--ckpt-every', '1', '--keep-last', '100',
                '--out', run)
    one_line_error(r, 'not finite')
    cks = find_checkpoints(run)
    assert cks, 'a checkpoint every step should have left some'
    for f in cks: assert nonfinite_tensors(read_checkpoint(f).model) == [], f
    assert read_checkpoint(cks[-1]).step == json.loads((run / 'run.json').read_text())['step']
    assert str(cks[-1]) in r.stderr                  # the message names the newest checkpoint, which is finite
    strict_jsonl(run / 'metrics.jsonl')             # valid JSON throughout
    json.loads((run / 'run.json').read_text(), parse_constant=lambda c: pytest.fail(f'{c} in run.json'))

def test_truncated_newest_checkpoint_falls_back(tmp_path):
    run = tmp_path / 'run'
    assert smollm2('train', *TINY, '--steps', '4', '--ckpt-every', '2', '--out', run).returncode == 0
    newest = find_checkpoints(run)[-1]
    assert newest.name == 'step_0000004.pt'
    newest.write_bytes(newest.read_bytes()[:5000])
    g = smollm2('generate', '--model', run / 'checkpoints', '--prompt', 'ROMEO:', '--max-new-tokens', '3')
    assert g.returncode == 0, g.stderr
    assert 'step_0000004.pt' in g.stderr and 'skipped' in g.stderr and 'Traceback' not in g.stderr
    r = smollm2('train', '--resume', run, '--steps', '6')
    assert r.returncode == 0, r.stderr
    assert 'step_0000004.pt' in r.stderr and 'Traceback' not in r.stderr
    assert json.loads((run / 'run.json').read_text())['start_step'] == 2
    for f in find_checkpoints(run): f.write_bytes(b'')          # none loads: one clear line
    one_line_error(smollm2('train', '--resume', run, '--steps', '8'), 'no checkpoint in')

def test_second_trainer_on_the_same_run_dir_is_refused(tmp_path):
    run = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'smollm2_nb.cli', 'train', *TINY, '--steps', '500', '--out', str(run)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / 'metrics.jsonl').exists(): time.sleep(0.05)
        r = smollm2('train', *TINY, '--steps', '5', '--out', run)
        one_line_error(r, f'is in use by process {p.pid}')
    finally:
        p.send_signal(signal.SIGTERM); p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM
    assert not (run / '.lock').exists()                      # released when the owner stopped
    assert smollm2('train', '--resume', run, '--steps', json.loads((run / 'run.json').read_text())['step'] + 1).returncode == 0

def _small_files_only():
    "In the child: files may not grow past 4 MB (a full disk, for real), and a write past it fails instead of killing us."
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))

def test_failed_save_leaves_no_temporary_file(tmp_path):
    run = tmp_path / 'run'
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'train', *TINY, '--steps', '3', '--ckpt-every', '2', '--out', str(run)],
                       capture_output=True, text=True, env=_env(),
                       preexec_fn=_small_files_only, timeout=240)
    one_line_error(r, 'could not write')
    assert 'step_0000002.pt' in r.stderr, r.stderr
    assert [f.name for f in (run / 'checkpoints').iterdir()] == []      # no checkpoint, no temporary file
    assert not list(run.rglob('*.tmp')), list(run.rglob('*'))
    assert json.loads((run / 'run.json').read_text())['status'] == 'failed'

def test_cli_errors_are_one_line(tmp_path):
    one_line_error(smollm2('train', *TINY, '--resume', '--out', tmp_path / 'none'), 'nothing to resume')
    one_line_error(smollm2('train', *TINY, '--seq-len', '5000', '--out', tmp_path / 'x'), "longer than the model's context")
    (tmp_path / 'empty').mkdir()
    one_line_error(smollm2('train', *TINY, '--data', tmp_path / 'empty', '--out', tmp_path / 'y'), 'holds no files')
    if not torch.cuda.is_available():
        one_line_error(smollm2('train', *TINY, '--device', 'cuda', '--out', tmp_path / 'z'), 'sees no CUDA GPU')
    one_line_error(smollm2('train', *TINY, '--steps', '0', '--out', tmp_path / 'w'), '--steps must be at least 1')

def test_offline_nothing_waits_on_the_hub(tmp_path):
    "A hub id offline is one line at once, not a minute of retries."
    t = time.time()
    one_line_error(smollm2('generate', '--model', 'HuggingFaceTB/SmolLM2-135M', '--prompt', 'Hi'), 'not reachable')
    env = {k: v for k, v in _env().items() if k != 'SMOLLM2_TOKENIZER'}
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'demo', '--out', str(tmp_path / 'demo')], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)   # outside the checkout: no shared/data copy either
    one_line_error(r, 'not reachable')
    assert time.time() - t < 60
