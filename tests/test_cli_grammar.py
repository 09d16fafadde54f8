"""One grammar for every command: each `smollm2 COMMAND --help` shows every default; a bad value of each shared flag
(--model, --device, --precision, --tokenizer, --out, --progress) and of each sampling flag is one line on stderr and exit 2,
before anything is loaded; old spellings still work with a one-line notice."""
import contextlib, io, subprocess, sys
import pytest
from smollm2_nb.cli import COMMANDS, SHARED, CHECKS, command_parser, main

def commands():
    "Every (command, subcommand or None) of `smollm2`."
    return [(n, s) for n, c in COMMANDS.items() for s in (c.fn if isinstance(c.fn, dict) else [None])]

def words(name, sub): return [name] + ([sub] if sub else [])

def run(*argv):
    "`smollm2 ARGV` in process: (exit code, stdout, stderr); --help's SystemExit(0) counts as 0."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()

def dests(name, sub):
    return {a.dest: a for a in command_parser(name, sub)._actions}

def test_top_level_help_lists_every_command_with_its_summary():
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', '--help'], capture_output=True, text=True)
    assert r.returncode == 0
    for name, c in COMMANDS.items(): assert f'  {name:<9} {c.summary}' in r.stdout, name

@pytest.mark.parametrize('name, sub', commands())
def test_help_shows_every_default(name, sub):
    code, out, err = run(*words(name, sub), '--help')
    assert code == 0 and not err and out.startswith(f"usage: smollm2 {' '.join(words(name, sub))}"), (out, err)
    for a in command_parser(name, sub)._actions:
        if a.dest == 'help' or a.help == '==SUPPRESS==' or a.required or a.nargs == 0 and a.const is True and not a.default: continue
        assert '(default: ' in a.help, (name, sub, a.dest, a.help)

BAD = {'model': ['--model', 'no/such/folder/model.gguf'], 'device': ['--device', 'tpu'], 'precision': ['--precision', 'fp7'],
       'tokenizer': ['--tokenizer', './no-such-tokenizer'], 'progress': ['--progress=yes'],
       'temperature': ['--temperature', '-1'], 'top_p': ['--top-p', '0'], 'top_k': ['--top-k', '-2'],
       'repetition_penalty': ['--repetition-penalty', '0'], 'max_new_tokens': ['--max-new-tokens', '100000']}

def cases():
    out = []
    for name, sub in commands():
        have = dests(name, sub)
        out += [(name, sub, flag) for flag in [*SHARED, *CHECKS] if flag in have]
    return out

@pytest.mark.parametrize('name, sub, flag', cases())
def test_a_bad_shared_value_is_one_line_and_exit_2(name, sub, flag, tmp_path):
    a_file = tmp_path / 'a-file'; a_file.write_text('x')
    bad = BAD.get(flag, ['--out', str(a_file / 'under-a-file')])
    code, out, err = run(*words(name, sub), *bad)
    assert code == 2, (name, sub, flag, code, err)
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith(f'smollm2 {name}: error: argument --{flag.replace("_", "-")}'), err

def test_every_model_command_takes_device_precision_tokenizer():
    loads = {(n, s) for n, s in commands() if 'model' in dests(n, s)} - {('space', 'push')}   # a Space names a hub model; nothing loads here
    assert loads == {('generate', None), ('chat', None), ('eval', None), ('app', None), ('serve', None), ('export', None), ('hub', 'push')}
    for n, s in loads:
        assert 'tokenizer' in dests(n, s), (n, s)
    decoding = {(n, s) for n, s in loads if {'device', 'precision'} <= set(dests(n, s))}
    # export and hub push write the weights as stored, in fp32 (export's --dtype is the GGUF file's type), so they decode nothing
    assert decoding == loads - {('export', None), ('hub', 'push')}
    assert 'device' in dests('export', None) and 'precision' not in dests('export', None)

def test_shared_defaults_are_the_same_everywhere():
    for name, sub in commands():
        for dest, a in dests(name, sub).items():
            if dest in SHARED and 'default' in SHARED[dest] and a.default != '==SUPPRESS==':
                assert a.default == SHARED[dest]['default'], (name, sub, dest, a.default)

def test_values_are_checked_before_the_model_loads():
    "The official GGUF would take seconds to load; a bad temperature never gets there."
    code, out, err = run('chat', '--model', 'HuggingFaceTB/SmolLM2-135M-Instruct', '--temperature', '-1')
    assert code == 2 and 'must be >= 0' in err and not out
    code, out, err = run('generate', '--model', 'HuggingFaceTB/SmolLM2-135M', '--prompt', 'hi', '--max-new-tokens', '100000')
    assert code == 2 and "the model's context is 8192 tokens" in err

def test_usage_errors_through_the_console_script():
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'eval', '--model', 'no/such/run/x', '--window', '64'],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, '-m', 'smollm2_nb.cli', 'hub'], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == 'smollm2 hub: error: choose a subcommand: push'

def test_old_spellings_work_with_a_notice(tmp_path):
    from smollm2_nb.cli import parse_command
    for name, sub, argv, want in [('eval', None, ['HuggingFaceTB/SmolLM2-135M'], ('model', 'HuggingFaceTB/SmolLM2-135M')),
                                  ('export', None, ['HuggingFaceTB/SmolLM2-135M', '--format', 'hf', '--out', 'x'], ('model', 'HuggingFaceTB/SmolLM2-135M')),
                                  ('hub', 'push', ['HuggingFaceTB/SmolLM2-135M', '--repo', 'a/b'], ('model', 'HuggingFaceTB/SmolLM2-135M')),
                                  ('data', 'prepare', ['x.txt', '--out', 'o', '--config', 'sample-10BT'], ('hub_config', 'sample-10BT')),
                                  ('bench', None, ['--smoke'], ('profile', 'smoke')), ('bench', None, ['--full'], ('profile', 'full'))]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err): args = parse_command(command_parser(name, sub), argv, COMMANDS[name].renamed)
        assert args[want[0]] == want[1], (name, args)
        assert len(err.getvalue().strip().splitlines()) == 1 and 'old spelling works' in err.getvalue(), err.getvalue()
    code, out, err = run('eval')   # neither the flag nor the old positional
    assert code == 2 and 'required: --model' in err

def test_interrupted_is_130_and_a_failure_is_1(monkeypatch):
    import smollm2_nb.commands as commands
    def stop(): raise KeyboardInterrupt
    def fail(): raise RuntimeError('disk full\nsecond line')
    monkeypatch.setattr(commands, 'bench', stop)
    assert run('bench')[0] == 130
    monkeypatch.setattr(commands, 'bench', fail)
    code, out, err = run('bench')
    assert code == 1 and err == 'smollm2 bench: disk full\n'
