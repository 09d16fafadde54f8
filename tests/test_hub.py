"""`smollm2 hub push` / `smollm2 space push` offline: huggingface_hub's own `HfApi` builds every request; only the
transport under its httpx client is replaced by a recorder (tests/hub_fake.py) that answers as the Hub does."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hub_fake import committed_files, no_hf_token, offline_hub
from smollm2_nb.ship.hub import cli_hub, cli_space, model_folder, run_facts
from smollm2_nb.run.layout import read_json, read_jsonl
from smollm2_nb.train.config import TrainConfig; from smollm2_nb.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recorder():
    with offline_hub() as rec: yield rec


@pytest.fixture
def no_token(tmp_path):
    with no_hf_token(tmp_path): yield


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A real 12-step run: validation at 6 and 12, samples at 12, a checkpoint at 12, best weights."
    out = tmp_path_factory.mktemp('hub') / 'run'
    train(TrainConfig(preset='tiny', steps=12, batch_size=2, seq_len=32, eval_every=6, eval_batches=1, sample_every=12,
                      sample_tokens=8, ckpt_every=12, out=str(out), progress=False))
    return out


def test_run_facts_come_from_the_run_files(run):
    facts = run_facts(run / 'checkpoints' / 'step_0000012.pt')
    metrics, info = read_jsonl(run / 'metrics.jsonl'), read_json(run / 'run.json')
    assert facts['step'] == 12 and facts['tokens'] == 12 * 2 * 32 == 12 * info['tokens_per_step']
    assert facts['train_loss'] == metrics[-1]['loss']
    assert facts['val_loss'] == [m['val_loss'] for m in metrics if 'val_loss' in m][-1]
    assert facts['device'] == 'cpu' and facts['precision'] == 'fp32' and facts['data'] == ['tinyshakespeare.txt']
    assert facts['samples'] and all(s['step'] == 12 for s in facts['samples'])
    best = read_json(run / 'best' / 'best.json')
    assert run_facts(run)['step'] == run_facts(run / 'best')['step'] == best['step']   # a run dir publishes its best weights
    early = run_facts(run, step=6)                     # the numbers of the weights published, not of the run's end
    assert early['val_loss'] == [m['val_loss'] for m in metrics if 'val_loss' in m][0] and early['samples'] == []
    assert run_facts(run.parent / 'elsewhere') == {}


def test_uploaded_folder_loads_in_transformers_with_a_card_from_the_run(run, recorder, monkeypatch, tmp_path):
    "Push, then rebuild the folder from the recorded commit: what from_pretrained would download."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from smollm2_nb.serve.load import load_model
    monkeypatch.setenv('HF_TOKEN', 'hf_recorded')
    assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny']) == 0
    files = committed_files(recorder.commit())
    assert sorted(files) == ['README.md', 'config.json', 'generation_config.json', 'model.safetensors',
                             'tokenizer.json', 'tokenizer_config.json']
    folder = tmp_path / 'as-uploaded'
    folder.mkdir()
    for name, content in files.items(): (folder / name).write_bytes(content)
    hf, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ours, _, info = load_model(run)
    ids = tok('ROMEO: what light', return_tensors='pt').input_ids
    with torch.no_grad(): assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4
    assert hf.generate(ids, max_new_tokens=5, do_sample=False).shape == (1, ids.shape[1] + 5)

    card = ModelCard(files['README.md'].decode())
    assert card.data.library_name == 'transformers' and card.data.pipeline_tag == 'text-generation'
    facts = run_facts(run, info['step'])
    text = card.text
    assert f"| parameters | {info['params']:,} |" in text
    assert f"| training steps | {facts['step']} |" in text and f"| training tokens | {facts['tokens']:,} |" in text
    assert f"| train loss | {facts['train_loss']:.3f} |" in text and f"| validation loss | {facts['val_loss']:.3f} |" in text
    assert '| hardware | cpu, fp32 |' in text and 'tinyshakespeare.txt' in text
    assert f"## Samples at step {facts['samples'][0]['step']}" in text and facts['samples'][0]['text'].strip() in text
    assert 'AutoModelForCausalLM.from_pretrained("alice/tiny")' in text and 'load_for_inference("alice/tiny")' in text


def test_hub_push_requests(run, recorder, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_recorded')
    assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny', '--private']) == 0
    assert capsys.readouterr().out.strip() == f'https://huggingface.co/alice/tiny/commit/{"0" * 40}'
    paths = recorder.paths()
    assert paths[0] == ('POST', '/api/repos/create')
    assert json.loads(recorder.requests[0].content) == {'name': 'tiny', 'organization': 'alice', 'visibility': 'private'}
    assert ('POST', '/api/models/alice/tiny/preupload/main') in paths
    assert paths[-1] == ('POST', '/api/models/alice/tiny/commit/main')
    assert {r.headers.get('authorization') for r in recorder.requests if r.method == 'POST'} == {'Bearer hf_recorded'}
    assert json.loads(committed_files(recorder.commit())['config.json'])['architectures'] == ['LlamaForCausalLM']


def test_space_push_uploads_app_and_sets_the_model(recorder, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_recorded')
    monkeypatch.chdir(ROOT)
    assert cli_space(['push', '--repo', 'alice/space', '--model', 'alice/tiny']) == 0
    assert capsys.readouterr().out.strip() == 'https://huggingface.co/spaces/alice/space'
    create = json.loads(recorder.requests[0].content)
    assert create['type'] == 'space' and create['sdk'] == 'gradio'
    assert recorder.commit().url.path == '/api/spaces/alice/space/commit/main'
    files = committed_files(recorder.commit())
    assert {'app.py', 'README.md', 'requirements.txt'} <= set(files)
    assert files['app.py'] == (ROOT / 'app' / 'app.py').read_bytes()
    readme = files['README.md'].decode()
    assert 'sdk: gradio' in readme and 'models:\n  - alice/tiny\n---' in readme
    var = recorder.requests[-1]
    assert var.url.path == '/api/spaces/alice/space/variables'
    assert json.loads(var.content) == {'key': 'SMOLLM2_MODEL', 'value': 'alice/tiny', 'description': 'the model this Space serves'}


def test_missing_token_is_one_line_and_sends_nothing(run, recorder, no_token, capsys):
    assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny']) == 2
    assert cli_space(['push', '--repo', 'alice/space', '--model', 'alice/tiny']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all('hf auth login' in l and 'HF_TOKEN' in l for l in err)
    assert err[0].startswith('smollm2 hub: ') and err[1].startswith('smollm2 space: ')
    assert recorder.requests == []


def test_console_script_without_token_exits_nonzero_without_traceback(run, tmp_path):
    "`python -m smollm2_nb.cli hub push` (the `smollm2` command) in a process with no token anywhere (an empty HF_HOME)."
    env = {k: v for k, v in os.environ.items() if k not in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH')}
    env['HF_HOME'] = str(tmp_path / 'hf-home')
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'hub', 'push', '--model', str(run), '--repo', 'alice/tiny'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and 'Traceback' not in r.stderr
    assert r.stderr.startswith('smollm2 hub: no Hugging Face token')


def test_offline_mode_and_bad_repo_are_one_line(run, monkeypatch, capsys):
    from huggingface_hub import constants
    monkeypatch.setenv('HF_TOKEN', 'hf_recorded')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny']) == 2
    assert capsys.readouterr().err.strip() == 'smollm2 hub: HF_HUB_OFFLINE is set: unset it to upload'
    assert cli_hub(['push', '--model', str(run), '--repo', 'not-a-repo']) == 2
    assert 'USER/NAME' in capsys.readouterr().err


def test_dry_run_writes_the_folder_and_sends_nothing(run, recorder, tmp_path, capsys):
    assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny', '--dry-run', '--out', str(tmp_path / 'dry')]) == 0
    assert 'would upload' in capsys.readouterr().out
    assert (tmp_path / 'dry' / 'README.md').exists() and (tmp_path / 'dry' / 'model.safetensors').exists()
    assert recorder.requests == []


def test_refused_token_is_one_line_saying_so(run, monkeypatch, capsys):
    "The Hub refusing the token (401) ends the push with one line that names the likely cause."
    monkeypatch.setenv('HF_TOKEN', 'hf_read_only')
    with offline_hub(fail={'/api/repos/create': 401}) as rec:
        assert cli_hub(['push', '--model', str(run), '--repo', 'alice/tiny']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('smollm2 hub: ') and 'write access' in err
    assert not any('/commit/' in r.url.path for r in rec.requests)
