"""The batch-1 decoders of `smollm2_nb.serve.decoders` against the plain model: the C++ step on CPU in every instruction-set
class this CPU runs (AVX2, AVX-512, AVX-512 VNNI, AVX-512 BF16; NEON on ARM), the static-cache step (eager); and the
products of every class against plain C++, the ARM classes under emulation where qemu and a cross compiler are here."""
import copy
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from smollm2_nb.serve import decoders as inference
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2
from smollm2_nb.serve.generate import generate
from smollm2_nb.serve.decoders import (prepare_for_inference, cpu_decode_kernels, cpu_isa, cpu_isas, CPU_ISAS, ISA_ENV,
                                       CPUDecoder, GraphDecoder, TransposedLinear, Int8Linear)

def plain_model(preset):
    torch.manual_seed(0)
    return SmolLM2(get_config(preset)).eval().requires_grad_(False)

@pytest.fixture(scope='module')
def tiny(): return plain_model('tiny')

def prompt(model, T=8, seed=1):
    return torch.randint(1, model.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))

@torch.inference_mode()   # as in `generate`
def step_logits(decoder, seq, T):
    "(len(seq) - T, vocab) logits of the decoder for positions T-1 .. end-1, fed `seq`'s own tokens (teacher forcing)."
    logits, step = decoder.start(seq[:, :T], seq.shape[1])
    out = [logits.float()]
    for i in range(T, seq.shape[1] - 1): out.append(step(seq[0, i:i + 1]).float())
    return torch.cat(out)

def rel_err(a, b):
    "Largest logit difference, in units of the reference logits' standard deviation."
    return ((a - b).abs().max() / b.std()).item()

# Measured on a 2-core Intel Xeon (Sapphire Rapids), 2026-11-22 (max |logit difference| / std of the fp32 logits, 16 steps):
#   tiny:  fp32 3e-6, bf16 0.04, int8 0.10;   SmolLM2-135M: fp32 2e-5, bf16 0.18, int8 0.70 (its torch-ops path: 0.22, 0.53)
LIMITS = {'tiny': dict(fp32=1e-4, bf16=0.1, int8=0.25), 'smollm2-135m': dict(fp32=1e-3, bf16=0.4, int8=1.2)}

def check_decoder_matches_model(base, preset, isa):
    x = prompt(base)
    ref = generate(base, x, 16, temperature=0)                                 # plain fp32 model, PyTorch ops
    with torch.no_grad(): ref_logits = base(ref)[0, x.shape[1] - 1:-1].float()  # (16, vocab)
    for mode in ('fp32', 'bf16', 'int8'):
        m, decoder = prepare_for_inference(copy.deepcopy(base), mode)
        assert isinstance(decoder, CPUDecoder) and decoder.isa == isa, (mode, isa)
        logits = step_logits(decoder, ref, x.shape[1])
        err = rel_err(logits, ref_logits)
        with torch.no_grad(): torch_err = rel_err(m(ref)[0, x.shape[1] - 1:-1].float(), ref_logits)
        assert err < LIMITS[preset][mode], (preset, isa, mode, err)
        # no worse than PyTorch's ops; int8's step also rounds the activations to int8 (per 32, as llama.cpp's q8_0), the prompt's
        # included since it runs through the step, where PyTorch's ops keep them in bf16/fp32: tiny's 0.091 against 0.058 there
        assert err < max({'int8': 2.0}.get(mode, 1.5) * torch_err, LIMITS[preset]['fp32']), (preset, isa, mode, err, torch_err)
        top1 = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
        assert top1 >= {'fp32': 1.0, 'bf16': 0.8, 'int8': 0.6}[mode], (preset, isa, mode, top1)
        ref_logp, logp = F.log_softmax(ref_logits, -1), F.log_softmax(logits, -1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()          # nats/token from the fp32 model's distribution
        assert kl < {'fp32': 1e-6, 'bf16': 2e-3, 'int8': 1e-2}[mode], (preset, isa, mode, kl)   # measured ~3e-4 (bf16), ~4e-3 (int8) on 135M
        if mode == 'fp32': assert torch.equal(generate(m, x, 16, temperature=0, decoder=decoder), ref)  # the same greedy tokens

def test_cpu_decoder_matches_model_tiny(tiny, isa):
    check_decoder_matches_model(tiny, 'tiny', isa)  # hidden 96, head_dim 16: the padded shapes

def test_cpu_decoder_matches_model_135m(isa):
    check_decoder_matches_model(plain_model('smollm2-135m'), 'smollm2-135m', isa)

@pytest.mark.parametrize('threads', [1, 2])
def test_cpu_decoder_long_generation(tiny, isa, threads):
    "Past the prompt by many steps (the cache, RoPE positions; from 128 positions the heads' attention is split among the threads), and a prompt of one token."
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'fp32')
    assert decoder.isa == isa
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for x in (prompt(tiny, 1), prompt(tiny, 40)):
            assert torch.equal(generate(m, x, 100, temperature=0, decoder=decoder), generate(tiny, x, 100, temperature=0))
    finally: torch.set_num_threads(before)

@pytest.mark.parametrize('preset', ['tiny', 'smollm2-135m'])
def test_prefill_is_the_step_token_by_token(preset, isa):
    "A short prompt's tokens through the C++ step at once (each product reads its weights once for all of them): the same logits, bit for bit, as one token at a time, and the same KV cache after."
    base, T = plain_model(preset), 12
    x = prompt(base, T + 1)
    for mode in ('fp32', 'bf16', 'int8'):
        m, decoder = prepare_for_inference(copy.deepcopy(base), mode)
        assert decoder.prefill_up_to[decoder.mats[0].dtype] >= T
        with torch.inference_mode():
            at_once, step = decoder.start(x[:, :T], T + 4)
            one_by_one, step1 = decoder.start(x[:, :1], T + 4)
            for i in range(1, T): one_by_one = step1(x[0, i:i + 1])
            assert torch.equal(at_once, one_by_one), (preset, isa, mode)
            assert torch.equal(step(x[0, T:]), step1(x[0, T:])), (preset, isa, mode)   # reads the cache both filled

def test_kv_cache_fp16_beside_fp32(tiny, isa):
    "An fp32 model keeps an fp32 KV cache; the others fp16. The step with an fp16 cache: its first layer's keys and values are the fp32 cache's rounded to fp16 (nothing before them reads the cache), and its logits are the fp32 cache's within what rounding the cache costs."
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'fp32')
    assert decoder.kv_dtype == torch.float32
    m8, d8 = prepare_for_inference(copy.deepcopy(tiny), 'int8')
    assert d8.kv_dtype == torch.float16
    c, k, d = tiny.config, decoder.kernels, decoder                          # fp32 weights: the cache the one difference
    x = prompt(tiny, 10)[0]
    cos, sin = (t[:, :c.head_dim // 2].contiguous() for t in m.rotary(torch.arange(16)))
    shape = (c.num_hidden_layers, c.num_key_value_heads, 16, c.head_dim)
    out = {}
    for dt in (torch.float32, torch.float16):
        kc, vc = torch.zeros(shape, dtype=dt), torch.zeros(shape, dtype=dt)
        with torch.inference_mode():
            logits = k.prefill(x, 0, d.embed, d.norms, d.mats, d.scales, cos, sin, kc, vc, c.num_attention_heads,
                               c.intermediate_size, c.rms_norm_eps)
        out[dt] = (logits, kc, vc)
    (l32, k32, v32), (l16, k16, v16) = out[torch.float32], out[torch.float16]
    assert torch.equal(k16[0, :, :10], k32[0, :, :10].half()) and torch.equal(v16[0, :, :10], v32[0, :, :10].half())
    assert not torch.equal(k16[1:].float(), k32[1:])                       # the cache really is fp16: later layers read it
    assert 0 < rel_err(l16, l32) < 0.01, rel_err(l16, l32)                  # measured here: 1e-3 (tiny)
    with pytest.raises(RuntimeError, match='both fp32 or both fp16'):
        k.prefill(x, 0, d.embed, d.norms, d.mats, d.scales, cos, sin, torch.zeros(shape), torch.zeros(shape, dtype=torch.float16),
                  c.num_attention_heads, c.intermediate_size, c.rms_norm_eps)


needs_kernels = pytest.mark.skipif(not cpu_decode_kernels(), reason='no C++ decoding step here (needs AVX2 or AVX-512 and a compiler)')


def test_auto_is_int8_through_the_step(tiny, isa):
    "`auto` on a CPU that runs the C++ step: int8 weights through it, in every class; fp32 norms and embedding without native bf16."
    assert inference.decoding_precision('auto', 'cpu') == 'int8'
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'auto')
    assert decoder.isa == isa
    assert sum(isinstance(c, Int8Linear) for c in m.modules()) == 7 * tiny.config.num_hidden_layers + 1
    native_bf16 = inference.cpu_bf16_native() and isa == 'avx512bf16'     # a forced lower class runs as a CPU of that class would
    assert m.embed_tokens.weight.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    assert inference.activation_dtype('int8', 'cpu', decoder.kernels) == m.norm.weight.dtype

def test_bf16_without_native_bf16_widens_for_the_prompt(tiny, isa):
    "bf16 weights on a CPU (or forced class) without native bf16: fp32 activations, one bf16 copy of the tied embedding/head."
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'bf16')
    native_bf16 = inference.cpu_bf16_native() and isa == 'avx512bf16'
    assert m.norm.weight.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    assert m.embed_tokens.weight.dtype == torch.bfloat16
    assert m.lm_head.weight.data_ptr() == m.embed_tokens.weight.data_ptr()   # one copy of the tied weight
    if not native_bf16:
        assert sum(isinstance(c, inference.WidenedLinear) for c in m.modules()) == 7 * tiny.config.num_hidden_layers + 1
    x = prompt(tiny, 40)                                                  # 40 rows: the widened GEMM; 1 row: rounded to bf16
    with torch.no_grad(): ref, got = tiny(x), m(x).float()
    assert ((got - ref).norm() / ref.norm()).item() < 0.02
    assert generate(m, x, 8, temperature=0, decoder=decoder).shape == (1, 48)
    assert generate(m, prompt(tiny), 8, temperature=0, decoder=decoder).shape == (1, 16)

# CPU flags of real machines (/proc/cpuinfo names), abridged to what the classes look at
SKYLAKE_X = {'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd'}
ICE_LAKE = SKYLAKE_X | {'avx512_vnni', 'avx512vbmi'}
SAPPHIRE_RAPIDS = ICE_LAKE | {'avx512_bf16', 'amx_tile'}
ZEN3 = {'avx', 'avx2', 'fma', 'f16c', 'bmi2'}
GRAVITON = {'fp', 'asimd', 'sve'}   # arm64's names (Linux's 'Features'): no dot-product extension (Graviton 1 class)
GRAVITON3 = GRAVITON | {'asimddp', 'sve2'}

def test_classes_from_cpu_flags(monkeypatch):
    monkeypatch.delenv(ISA_ENV, raising=False); monkeypatch.delenv('SMOLLM2_CPU_KERNELS', raising=False)
    assert cpu_isas(SAPPHIRE_RAPIDS) == ['avx512bf16', 'avx512vnni', 'avx512', 'avx2']
    assert cpu_isas(ICE_LAKE) == ['avx512vnni', 'avx512', 'avx2']
    assert cpu_isas(SKYLAKE_X) == ['avx512', 'avx2']
    assert cpu_isas(ZEN3) == ['avx2'] and cpu_isas(ZEN3 - {'fma'}) == []
    assert cpu_isas(GRAVITON) == ['neon'] and cpu_isas(GRAVITON3) == ['neondot', 'neon'] and cpu_isas(SAPPHIRE_RAPIDS) == cpu_isas(SAPPHIRE_RAPIDS - {'asimd'})
    assert cpu_isas({'fp'}) == [] and cpu_isa({'fp'}) is None           # PyTorch's ops
    assert [cpu_isa(f) for f in (SAPPHIRE_RAPIDS, ICE_LAKE, SKYLAKE_X, ZEN3)] == ['avx512bf16', 'avx512vnni', 'avx512', 'avx2']
    if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):     # this CPU: our reading of its flags agrees with PyTorch's
        assert 'avx2' in cpu_isas() and ('avx512' in cpu_isas()) == (torch.backends.cpu.get_cpu_capability() == 'AVX512')

def test_forcing_a_class(monkeypatch):
    "$SMOLLM2_CPU_ISA picks a class the CPU runs, or 'none'; one it does not run (it would crash) or a typo is an error naming the choices."
    monkeypatch.setenv(ISA_ENV, 'avx2')
    assert cpu_isa(SAPPHIRE_RAPIDS) == 'avx2'
    monkeypatch.setenv(ISA_ENV, 'none')
    assert cpu_isa(SAPPHIRE_RAPIDS) is None
    monkeypatch.setenv(ISA_ENV, 'avx512bf16')
    with pytest.raises(ValueError, match='does not run it .it runs: avx512, avx2.'): cpu_isa(SKYLAKE_X)
    monkeypatch.setenv(ISA_ENV, 'avx3')
    with pytest.raises(ValueError, match='use one of avx512bf16, avx512vnni, avx512, avx2, neondot, neon or none'): cpu_isa(ZEN3)

def test_graph_decoder_eager_matches_model(tiny):
    x = prompt(tiny)
    m = copy.deepcopy(tiny); decoder = GraphDecoder(m, cuda_graphs=False)
    ref = generate(tiny, x, 16, temperature=0)
    assert torch.equal(generate(m, x, 16, temperature=0, decoder=decoder), ref)
    with torch.no_grad(): ref_logits = tiny(ref)[0, x.shape[1] - 1:-1]
    assert rel_err(step_logits(decoder, ref, x.shape[1]), ref_logits) < 1e-4
    assert torch.equal(generate(m, prompt(tiny, 300), 5, temperature=0, decoder=decoder), generate(tiny, prompt(tiny, 300), 5, temperature=0))  # a bigger cache

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_graph_decoder_eager_half_precision(tiny, dtype):
    """The GPU decoder's step in the half formats a GPU decodes in (fp16 on a T4, bf16 on sm_80+), run eagerly here: it agrees
    with the model's own forward in that dtype, and is no further from fp32 than that forward is."""
    x = prompt(tiny)
    ref = generate(tiny, x, 16, temperature=0)
    with torch.no_grad(): ref32 = tiny(ref)[0, x.shape[1] - 1:-1]
    m = copy.deepcopy(tiny).to(dtype)
    with torch.no_grad(): model_half = m(ref)[0, x.shape[1] - 1:-1].float()
    decoder = GraphDecoder(m, cuda_graphs=False)
    ours = step_logits(decoder, ref, x.shape[1])
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    assert rel_err(ours, model_half) < 0.1, rel_err(ours, model_half)          # same dtype: rounding differences only
    assert rel_err(ours, ref32) < max(2 * rel_err(model_half, ref32), 0.05)    # no further from fp32 than the model's forward
    assert generate(m, x, 16, temperature=0, decoder=decoder).shape == (1, x.shape[1] + 16)

def test_no_kernels_falls_back_to_torch_ops(tiny, monkeypatch):
    "A CPU without the C++ step (simulated: ARM, or no compiler): PyTorch's ops, the same tokens."
    x = prompt(tiny)
    with_kernels = {mode: prepare_for_inference(copy.deepcopy(tiny), mode) for mode in ('fp32', 'bf16', 'int8')}
    monkeypatch.setenv('SMOLLM2_CPU_KERNELS', '0')
    monkeypatch.setattr(inference, '_kernels', {})     # forget this process's builds; restored after the test
    assert cpu_decode_kernels() is None
    for mode, (fast, _) in with_kernels.items():
        m, decoder = prepare_for_inference(copy.deepcopy(tiny), mode)
        assert decoder is None, mode
        assert torch.equal(generate(m, x, 16, temperature=0), generate(fast, x, 16, temperature=0)), mode
    m, _ = prepare_for_inference(copy.deepcopy(tiny), 'fp32')
    assert any(isinstance(c, TransposedLinear) for c in m.modules())   # the faster layout for PyTorch's batch-1 product
    assert torch.equal(generate(m, x, 16, temperature=0), generate(tiny, x, 16, temperature=0))

def test_no_ninja_says_how_to_get_the_fast_step(tiny, monkeypatch):
    "Without the ninja build tool torch cannot build the C++ step: one warning naming the fix, then PyTorch's ops."
    import torch.utils.cpp_extension as cpp_extension
    monkeypatch.setattr(cpp_extension, 'is_ninja_available', lambda: False)
    monkeypatch.setattr(inference, '_kernels', {})
    monkeypatch.setattr(inference, 'cpu_flags', lambda: ZEN3)          # past the CPU check, on any x86 machine
    monkeypatch.setattr(inference.shutil, 'which', lambda name: '/usr/bin/' + name)   # and past the compiler check
    with pytest.warns(UserWarning, match='pip install ninja'): m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'fp32')
    assert decoder is None
    assert torch.equal(generate(m, prompt(tiny), 8, temperature=0), generate(tiny, prompt(tiny), 8, temperature=0))

class Spy:
    "Wraps a decoder and counts its `start` calls."
    def __init__(self, decoder): self.decoder, self.starts = decoder, 0
    def start(self, *a):
        self.starts += 1
        return self.decoder.start(*a)

@pytest.mark.parametrize('make', ['cpu', 'graph'])
def test_sampling_through_decoder(tiny, make):
    "temperature / top-k / top-p / repetition penalty with a seed: the same tokens through the decoder as without it."
    if make == 'cpu' and not cpu_decode_kernels(): pytest.skip('no C++ decoding step here')
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'fp32') if make == 'cpu' else (copy.deepcopy(tiny), None)
    if make == 'graph': decoder = GraphDecoder(m, cuda_graphs=False)
    spy = Spy(decoder)
    x = prompt(tiny)
    for kw in (dict(temperature=0.8), dict(temperature=1.0, top_k=20), dict(temperature=0.9, top_p=0.9),
               dict(temperature=0.7, top_k=50, top_p=0.95, repetition_penalty=1.3), dict(temperature=0, repetition_penalty=1.5)):
        ours = generate(m, x, 24, seed=5, decoder=spy, **kw)
        assert torch.equal(ours, generate(m, x, 24, seed=5, **kw)), kw
        assert torch.equal(ours, generate(tiny, x, 24, seed=5, **kw)), kw
    assert spy.starts == 5   # each setting went through the decoder once
    assert len(set(generate(m, x, 24, temperature=1.0, seed=s, decoder=spy)[0, -24:].tolist().__str__() for s in range(3))) == 3  # it samples

def test_batches_and_padding_skip_decoder(tiny):
    m = copy.deepcopy(tiny); spy = Spy(GraphDecoder(m, cuda_graphs=False))
    two = torch.cat([prompt(tiny, seed=1), prompt(tiny, seed=2)])                        # (2, 8)
    assert torch.equal(generate(m, two, 8, temperature=0, decoder=spy), generate(tiny, two, 8, temperature=0))
    mask = torch.ones(1, 8, dtype=torch.long); mask[0, :3] = 0                            # one left-padded prompt
    assert torch.equal(generate(m, prompt(tiny), 8, temperature=0, attention_mask=mask, decoder=spy),
                       generate(tiny, prompt(tiny), 8, temperature=0, attention_mask=mask))
    assert spy.starts == 0
    generate(m, prompt(tiny), 8, temperature=0, attention_mask=torch.ones(1, 8, dtype=torch.long), decoder=spy)  # no padding: batch 1
    assert spy.starts == 1

def test_int8_linear_prompt_path_matches_decode_path():
    "An `Int8Linear` runs few rows through the fused int8 kernel and a prompt's many rows through a bf16 GEMM on the widened weights: the two agree."
    torch.manual_seed(0)
    lin = torch.nn.Linear(576, 1536, bias=False)
    q = inference.Int8Linear.from_linear(lin)
    assert 4 <= q.fused_max_rows < 64
    x = torch.randn(64, 576)
    with torch.no_grad():
        many = q(x).float()                                          # 64 rows: one bf16 GEMM
        few = torch.cat([q(x[i:i + 4]) for i in range(0, 64, 4)]).float()   # 4 rows at a time: the fused kernel
        ref = lin(x)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert rel(many, ref) < 0.01 and rel(few, ref) < 0.01, (rel(many, ref), rel(few, ref))   # quantization error: ~5e-3
    assert rel(many, few) < 5e-3, rel(many, few)                      # bf16 rounding apart, measured ~2e-3

CSRC, CHECK = inference.CSRC, Path(__file__).parent / 'csrc' / 'kernels_check.cpp'
ARM_CXX, QEMU = shutil.which('aarch64-linux-gnu-g++'), shutil.which('qemu-aarch64')
ARM_TOOLS = 'apt-get install g++-aarch64-linux-gnu qemu-user'

def is_arm_class(isa): return CPU_ISAS[isa][0][0].startswith('-march=armv')   # x86's flags are -m<feature>

@pytest.mark.parametrize('cls', list(CPU_ISAS))
def test_kernels_match_reference(cls, tmp_path):
    "Each class's products (fp32, bf16, int8, q . k) against plain C++ in double: natively where this CPU runs the class, the ARM ones under qemu."
    native = cls in cpu_isas()
    if not native and not is_arm_class(cls): pytest.skip(f'this CPU does not run {cls} (it runs: {cpu_isas()})')
    if not native and not (ARM_CXX and QEMU): pytest.skip(f'{cls} runs under emulation with a cross compiler and qemu: {ARM_TOOLS}')
    cxx = shutil.which(os.environ.get('CXX', 'c++')) if native else ARM_CXX
    if not cxx: pytest.skip('no C++ compiler here')
    exe = tmp_path / f'check_{cls}'
    subprocess.run([cxx, '-O3', *CPU_ISAS[cls][0], *([] if native else ['-static']), f'-I{CSRC}', str(CHECK), '-o', str(exe)], check=True)
    out = subprocess.run([str(exe)] if native else [QEMU, str(exe)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == f'ok {cls}', out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == f'class {cls}'             # the flags selected the class they are named for

def test_thread_pool_runs_every_piece_once(tmp_path):
    "The step's thread pool (thread_pool.h), compiled alone: every piece of every product runs exactly once, on 1-4 threads, with two callers at once, nested, and after its workers slept."
    cxx = shutil.which(os.environ.get('CXX', 'c++'))
    if not cxx: pytest.skip('no C++ compiler here')
    exe = tmp_path / 'pool_check'
    subprocess.run([cxx, '-O2', '-std=c++17', '-pthread', f'-I{CSRC}', str(Path(__file__).parent / 'csrc' / 'pool_check.cpp'), '-o', str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == 'ok', out.stdout[-3000:] + out.stderr[-3000:]

@pytest.mark.skipif(not ARM_CXX, reason=f'the ARM build is checked with a cross compiler: {ARM_TOOLS}')
def test_step_compiles_for_arm():
    "The whole step, torch's headers included, compiles for 64-bit ARM (linked and run against the model by tools/arm_emulation.sh, under qemu)."
    from torch.utils.cpp_extension import include_paths
    inc = [f'-I{p}' for p in [*include_paths(), sysconfig.get_paths()['include']]]
    out = subprocess.run([ARM_CXX, '-std=c++20', '-fsyntax-only', '-fopenmp', *CPU_ISAS['neondot'][0], '-DTORCH_EXTENSION_NAME=x',
                          *inc, str(inference.CPU_DECODE_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
