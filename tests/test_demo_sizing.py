"`smollm2 demo` on a CPU is sized from a measured step time, so the whole command fits its budget on any CPU."
import pytest
from smollm2_nb.train.demo import (size_cpu_demo, measure_step_seconds, demo_config, CPU_DEMO_BUDGET_S, CPU_DEMO_BATCHES,
                                   CPU_DEMO_STEPS)

# seconds per 16 x 128 step: a 2-core AVX-512 EPYC (Zen 5), idle (~0.75; 400 steps with evals and samples took 5 min 53 s),
# a 2-core AVX2 EPYC (Zen 3) (2.0-2.5 s per step with evals and samples)
FAST, AVX2_ZEN3, SLOW = 0.75, 2.25, 30.0

def tokens(size): return size['batch_size'] * size['steps']

def test_a_fast_cpu_runs_the_full_cpu_demo():
    assert size_cpu_demo(FAST) == dict(batch_size=16, steps=400, est_s=size_cpu_demo(FAST)['est_s'])
    assert size_cpu_demo(FAST)['est_s'] <= CPU_DEMO_BUDGET_S

@pytest.mark.parametrize('step_s', [AVX2_ZEN3, 1.2, 1.6, 3.0, 3.6])   # above ~3.9 s the 150-step floor wins
def test_a_slower_cpu_gets_a_smaller_demo_within_the_budget(step_s):
    size = size_cpu_demo(step_s)
    assert size['batch_size'] in CPU_DEMO_BATCHES and CPU_DEMO_STEPS[0] <= size['steps'] <= CPU_DEMO_STEPS[1]
    assert size['steps'] % 10 == 0
    assert size['est_s'] <= CPU_DEMO_BUDGET_S
    assert size['est_s'] >= 0.85 * CPU_DEMO_BUDGET_S or size == size_cpu_demo(FAST) or size['steps'] == CPU_DEMO_STEPS[1]  # uses it

def test_avx2_zen3_machine():
    "2.25 s per 16 x 128 step took ~20 min for 400 + 50 steps; sized, the estimate is 8 min or less, still hundreds of steps."
    size = size_cpu_demo(AVX2_ZEN3)
    assert size['batch_size'] == 8 and size['steps'] >= 250, size
    assert (size['steps'] + 50) * AVX2_ZEN3 * size['batch_size'] / 16 < CPU_DEMO_BUDGET_S

def test_slower_never_trains_on_more_tokens():
    sizes = [size_cpu_demo(s / 10) for s in range(5, 80)]
    assert all(tokens(a) >= tokens(b) for a, b in zip(sizes, sizes[1:]))
    assert [s['batch_size'] for s in sizes] == sorted((s['batch_size'] for s in sizes), reverse=True)

def test_a_very_slow_cpu_keeps_the_floor_and_says_how_long():
    size = size_cpu_demo(SLOW)
    assert (size['batch_size'], size['steps']) == (CPU_DEMO_BATCHES[-1], CPU_DEMO_STEPS[0])
    assert size['est_s'] > CPU_DEMO_BUDGET_S   # the estimate it prints is honest about it

def test_less_budget_left_means_a_smaller_demo():
    assert tokens(size_cpu_demo(1.2, budget_s=300)) < tokens(size_cpu_demo(1.2, budget_s=480))

def test_config_follows_the_size():
    "The schedule's warmup, evals, samples (a tenth of the run) and checkpoints scale with the steps chosen."
    c = demo_config('cpu', steps=290, batch_size=8)
    assert (c.preset, c.steps, c.batch_size, c.seq_len) == ('tiny', 290, 8, 128)
    assert (c.warmup_steps, c.sample_every, c.eval_every, c.ckpt_every) == (29, 29, 36, 72)
    d = demo_config('cpu')
    assert (d.steps, d.batch_size, d.warmup_steps, d.sample_every, d.eval_every, d.ckpt_every) == (400, 16, 40, 40, 50, 100)
    assert demo_config('cpu', steps=150).eval_every == 18            # 8 evaluations in any run, not one per 10 steps
    assert demo_config('cuda', steps=10).preset == 'smollm2-135m'   # the GPU demo is never shrunk

def test_measure_step_seconds_times_real_steps():
    "A real measurement on this CPU: positive, and a step of 4x the tokens takes longer."
    small = measure_step_seconds(batch_size=1, seq_len=32, steps=1)
    big = measure_step_seconds(batch_size=4, seq_len=128, steps=1)
    assert 0 < small < big
