"`smollm2 bench --smoke`: the one command runs end to end on CPU and writes its JSON and Markdown table."
import json, os, subprocess, sys
from pathlib import Path

def test_bench_smoke_writes_json_and_table(tmp_path):
    out = tmp_path / 'bench'
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'bench', '--smoke', '--out', str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / 'bench.json').read_text())
    assert res['profile'] == 'smoke' and res['device'] == 'cpu'
    rows = res['throughput']
    assert {r['model'] for r in rows} == {'smollm2_nb', 'transformers'}
    assert {r['precision'] for r in rows} == {'fp32', 'fp16'} and len({r['seq_len'] for r in rows}) == 2
    for row in rows:
        assert row['tokens_per_sec'] > 0 and row['est_mem_bytes'] > 0 and row['ratio'] > 0
    assert set(res['loss_curves']['max_abs_diff_vs_fp32']) == {'fp16'}
    assert all(len(c) == res['loss_curves']['steps'] for c in res['loss_curves']['curves'].values())
    assert res['attention_kernels']['fp32']['MATH (gqa)'] is True
    assert res['classic_demo']['ran'] is False
    ddp = res['ddp']   # 2 gloo processes at batch B against 1 at 2B, through the real trainer command
    assert ddp['ran'] and ddp['world_sizes'] == [1, 2] and ddp['max_abs_loss_diff'] < 1e-4 and ddp['scaling'] > 0, ddp
    (dec,) = res['decode']['rows']
    assert dec['precision'] == 'fp32' and dec['greedy_equal'] is True and dec['ours_tokens_per_sec'] > 0 and dec['ratio'] > 0, dec
    md = (out / 'bench.md').read_text()
    header = md.splitlines()[2]
    assert 'ratio ours/transformers' in header
    assert sum(l.startswith('| smollm2_nb |') for l in md.splitlines()) == len(rows) // 2
    assert sum(l.startswith('| transformers |') for l in md.splitlines()) == len(rows) // 2
    assert '## DDP: 1 process vs N' in md and 'scaling x' in md
    assert '| fp32 | ' + dec['decoder'] + ' |' in md
