"`smollm2 export`: a GGUF file llama.cpp reads with our logits, and a Hugging Face folder transformers loads."
import subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2
from smollm2_nb.run.checkpoint import Checkpoint, save_checkpoint
from smollm2_nb.model.tokenizer import load_tokenizer

gguf = pytest.importorskip('gguf')
from smollm2_nb.ship.export import save_gguf, rope_pairs, llama_cpp_logits, llama_cpp_greedy

@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(3)
    return SmolLM2(get_config('tiny')).eval(), load_tokenizer()

def smollm2(*args):
    return subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', *map(str, args)], capture_output=True, text=True, timeout=300)

def test_gguf_holds_what_llama_cpp_needs(tiny, tmp_path):
    model, tok = tiny
    r = gguf.GGUFReader(save_gguf(model, tok, tmp_path / 'm.gguf'))
    val = lambda k: r.fields[k].parts[-1][0]
    c = model.config
    assert (val('llama.block_count'), val('llama.attention.head_count'), val('llama.attention.head_count_kv')) == \
           (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads)
    assert val('llama.rope.freq_base') == pytest.approx(100000.0) and val('llama.attention.layer_norm_rms_epsilon') == pytest.approx(1e-5)
    assert bytes(r.fields['tokenizer.ggml.pre'].parts[-1]).decode() == 'smollm'
    t = {x.name: x for x in r.tensors}
    assert 'output.weight' not in t                                     # tied head: llama.cpp reuses token_embd
    q = model.state_dict()['layers.0.self_attn.q_proj.weight'].numpy()
    got = np.array(t['blk.0.attn_q.weight'].data).reshape(q.shape)
    assert np.array_equal(got, rope_pairs(q, c.num_attention_heads)) and not np.array_equal(got, q)

def test_cli_exports_a_run_as_a_folder_transformers_loads(tiny, tmp_path):
    from transformers import AutoModelForCausalLM
    model, tok = tiny
    save_checkpoint(Checkpoint(step=5, config=model.config.to_dict(), model=model.state_dict()), tmp_path / 'run')
    r = smollm2('export', '--model', tmp_path / 'run', '--format', 'hf', '--out', tmp_path / 'hf')
    assert r.returncode == 0, r.stderr
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad(): assert torch.allclose(hf(ids).logits, model(ids), atol=1e-5)
    bad = smollm2('export', '--model', tmp_path / 'nothing', '--format', 'gguf', '--out', tmp_path / 'x.gguf')
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr and bad.stderr.startswith('smollm2 export: error:')

def test_llama_cpp_reads_our_gguf_with_our_logits(tiny, tmp_path):
    pytest.importorskip('llama_cpp')
    from smollm2_nb.serve.generate import generate
    model, tok = tiny
    ids = tok('ROMEO:\nBut soft, what light through yonder window breaks?')['input_ids']
    with torch.no_grad(): ours = model(torch.tensor([ids]))[0].numpy()
    path = save_gguf(model, tok, tmp_path / 'f32.gguf', 'f32')
    theirs = llama_cpp_logits(path, ids)                               # f32 KV cache: agreement to float rounding
    assert np.abs(ours - theirs).max() < 1e-5
    greedy = generate(model, torch.tensor([ids]), 12, temperature=0, eos_token_id=None)[0, len(ids):].tolist()
    assert llama_cpp_greedy(path, ids, 12) == greedy
    q8 = llama_cpp_greedy(save_gguf(model, tok, tmp_path / 'q8.gguf', 'q8_0'), ids, 12)
    assert len(q8) == 12                                                # q8_0 loads and decodes (agreement: see the notebook)
