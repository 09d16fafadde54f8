"""`smollm2 train --init MODEL`: a run that starts from saved weights (full fine-tuning or LoRA adapters), records
where it started, resumes, and exports its merged model. On a tiny model the test writes itself, in seconds."""
import json, shutil
from dataclasses import replace
from pathlib import Path
import pytest
import torch
from smollm2_nb.model.arch import SmolLM2, NextTokenLoss
from smollm2_nb.model.config import SmolLM2Config, get_config
from smollm2_nb.model.hf import load_pretrained, save_pretrained
from smollm2_nb.run.checkpoint import read_checkpoint
from smollm2_nb.run.data import load_data, BatchSampler, get_batch
from smollm2_nb.run.layout import read_jsonl
from smollm2_nb.model.tokenizer import load_tokenizer
from smollm2_nb.train.config import TrainConfig
from smollm2_nb.train.loop import train, config_from_args, cli_train
from smollm2_nb.ship.export import cli_export
from smollm2_nb.serve.load import load_model

peft = pytest.importorskip('peft')
from smollm2_nb.train.lora import load_lora_state, lora_layers

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "A tiny model with weights unlike any the trainer would draw (seed 0 and scaled), saved as a Hugging Face folder."
    torch.manual_seed(0)
    model = SmolLM2(get_config('tiny'))
    with torch.no_grad():
        for p in model.parameters(): p.mul_(1.5)
    return save_pretrained(model, tmp_path_factory.mktemp('base') / 'tiny-base', tokenizer=load_tokenizer())

def cfg(out, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(batch_size=2, seq_len=32, steps=3, warmup_steps=1, eval_every=0, sample_every=0, ckpt_every=100,
                                 progress=False, out=str(out)), **kw})

def first_batch_loss(model, c: TrainConfig) -> float:
    "The loss of `model` on the first training batch a run of `c` draws."
    data = load_data(c.data, load_tokenizer(), c.val_fraction)
    x, y = get_batch(data.train, BatchSampler(data.train_tokens, c.batch_size, c.seq_len, c.seed).next(), c.seq_len)
    with torch.no_grad(): return NextTokenLoss(model.eval())(x, y).item()

def test_init_starts_from_the_saved_weights_and_records_it(base, tmp_path):
    c = cfg(tmp_path / 'ft', init=str(base))
    s = train(c)
    assert s['status'] == 'finished'
    want = first_batch_loss(load_pretrained(base), c)
    fresh = train(cfg(tmp_path / 'scratch', preset='tiny'))            # the same batch from the preset's random weights
    first = [read_jsonl(tmp_path / d / 'metrics.jsonl')[0]['loss'] for d in ('ft', 'scratch')]
    assert first[0] == pytest.approx(want, abs=1e-5)
    assert abs(first[1] - want) > 0.1                                   # the check above can tell the two apart
    run = json.loads((tmp_path / 'ft' / 'run.json').read_text())
    assert run['init'] == str(base)
    assert run['config'] == SmolLM2Config.from_hf(base / 'config.json').to_dict() and run['preset'] is None
    assert run['trainable_params'] == run['params']
    assert read_checkpoint(tmp_path / 'ft').init == str(base)

@pytest.mark.parametrize('lora', [0, 4])
def test_resume_after_init_is_exact(base, tmp_path, lora):
    "Stopped at step 2 and resumed through the command line, with the --init folder gone: the same losses as one run."
    straight = train(cfg(tmp_path / 'straight', init=str(base), steps=4, lora_rank=lora))
    init = tmp_path / 'moved-base'; shutil.copytree(base, init)
    first = train(cfg(tmp_path / 'run', init=str(init), steps=2, schedule_steps=4, lora_rank=lora))
    shutil.rmtree(init)                                                 # resuming needs only the run's own checkpoint
    c = config_from_args(['--resume', str(tmp_path / 'run'), '--steps', '4', '--no-progress'])
    assert (c.init, c.lora_rank) == (str(init), lora)
    assert cli_train(['--resume', str(tmp_path / 'run'), '--steps', '4', '--no-progress']) == 0
    got, want = (read_jsonl(tmp_path / d / 'metrics.jsonl') for d in ('run', 'straight'))
    assert [m['step'] for m in got] == [1, 2, 3, 4]
    assert [m['loss'] for m in got] == [m['loss'] for m in want]       # bit for bit
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['init'] == str(init) and run['resumed_from'].endswith('step_0000002.pt')

def test_lora_trains_only_the_adapters(base, tmp_path):
    s = train(cfg(tmp_path / 'lora', init=str(base), lora_rank=4, lr=1e-2))
    ck = read_checkpoint(s['checkpoint'])
    base_sd = load_pretrained(base).state_dict()
    assert set(ck.lora['base']) == set(base_sd)
    assert all(torch.equal(ck.lora['base'][k], v) for k, v in base_sd.items())   # every base weight as it was
    adapters = ck.lora['adapters']
    assert len(adapters) == 2 * 4 * 7 and all('.lora_' in k for k in adapters)        # A and B of 7 layers in 4 blocks
    assert all(v.abs().sum() > 0 for k, v in adapters.items() if 'lora_B' in k)       # B starts at 0: it was trained
    n_state = sum(len(g['params']) for g in ck.optimizer['param_groups'])
    assert n_state == len(adapters)                                    # the optimizer holds the adapters only
    run = json.loads((tmp_path / 'lora' / 'run.json').read_text())
    assert run['trainable_params'] == sum(v.numel() for v in adapters.values()) < run['params'] / 10
    merged = ck.model                                               # what every loader reads: base + adapters merged
    assert torch.equal(merged['embed_tokens.weight'], base_sd['embed_tokens.weight'])
    assert not torch.equal(merged['layers.0.self_attn.q_proj.weight'], base_sd['layers.0.self_attn.q_proj.weight'])

def test_export_merges_the_adapters(base, tmp_path):
    s = train(cfg(tmp_path / 'lora', init=str(base), lora_rank=4, lr=1e-2, eval_every=3, eval_batches=2))
    assert s['best'] is not None
    ck = read_checkpoint(s['checkpoint'])
    adapter_model = load_lora_state(SmolLM2(SmolLM2Config.from_dict(ck.config)), ck.lora).eval()
    assert len(lora_layers(adapter_model)) == 28
    x = torch.randint(0, 1000, (2, 24))
    with torch.no_grad(): want, before = adapter_model(x), load_pretrained(base)(x)
    for source in (s['checkpoint'], tmp_path / 'lora'):                # the checkpoint, and the run dir (its best/ folder)
        out = tmp_path / f'export-{Path(source).name}'
        assert cli_export([str(source), '--format', 'hf', '--out', str(out)]) == 0
        exported = load_pretrained(out)
        assert not lora_layers(exported) and 'lora' not in json.dumps(json.loads((out / 'config.json').read_text()))
        with torch.no_grad(): got = exported(x)
        assert (got - want).abs().max() < 1e-4                         # merged model == adapter model
        assert (got - before).abs().max() > 1e-2                       # and not the base model

def test_bad_init_arguments_are_one_line(base, tmp_path, capsys):
    cases = [(['--lora-rank', '4'], 'pass --init MODEL too'),
             (['--init', str(base), '--preset', 'tiny'], 'drop --preset'),
             (['--init', str(tmp_path / 'nowhere')], 'neither a model folder nor a hub id'),
             (['--init', str(base), '--seq-len', '5000'], 'longer than the context'),
             (['--init', str(base), '--lora-rank', '4', '--lora-targets', 'q_proj,lm_head'], 'lm_head is not a linear layer')]
    for args, msg in cases:
        assert cli_train([*args, '--out', str(tmp_path / 'bad'), '--steps', '1', '--no-progress']) == 2, args  # bad input: exit 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (args, err)
    run = tmp_path / 'full'
    train(cfg(run, init=str(base), steps=1))
    for args, msg in [(['--lora-rank', '4'], 'trains every weight; resume with --lora-rank 0'),
                      (['--init', str(run)], '--init starts a new run')]:
        assert cli_train(['--resume', str(run), '--steps', '2', *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (args, err)

@pytest.mark.parametrize('dtype', ['f32', 'q4_1'])
def test_init_from_a_gguf_file(tmp_path, monkeypatch, dtype):
    "A GGUF file (written here by `save_gguf`, Q4_1 through the gguf package) as --init: the run starts from its weights."
    pytest.importorskip('gguf')
    from smollm2_nb.ship.export import save_gguf
    monkeypatch.setenv('SMOLLM2_CACHE', str(tmp_path / 'cache'))   # the converted copy stays in this test's folder
    torch.manual_seed(0)
    model = SmolLM2(get_config('tiny'))
    f = save_gguf(model, load_tokenizer(), tmp_path / f'tiny-{dtype}.gguf', dtype)
    c = cfg(tmp_path / 'ft', init=str(f), lora_rank=4, steps=2)
    assert train(c)['status'] == 'finished'
    converted, _, info = load_model(f)                              # what the run started from: the dequantized weights
    assert info['kind'] == 'gguf'
    first = read_jsonl(tmp_path / 'ft' / 'metrics.jsonl')[0]['loss']
    assert first == pytest.approx(first_batch_loss(converted, c), abs=1e-5)
    assert abs(first - first_batch_loss(SmolLM2(get_config('tiny')), c)) > 0.05   # another model's loss on that batch differs
    assert json.loads((tmp_path / 'ft' / 'run.json').read_text())['init'] == str(f)
