"Checks of the installed package that the notebooks cannot make about themselves."
import importlib, pkgutil, subprocess, sys, tomllib
from pathlib import Path
import smollm2_nb

ROOT = Path(__file__).resolve().parents[1]

# modules whose optional extras (gradio, kaggle) may be absent in a minimal install
OPTIONAL = {'smollm2_nb.app', 'smollm2_nb.kaggle'}

def test_library_imports_without_nbdev_or_fastcore():
    "Every module imports with nbdev, fastcore and execnb made unimportable."
    mods = [m.name for m in pkgutil.iter_modules(smollm2_nb.__path__, 'smollm2_nb.') if m.name not in OPTIONAL]
    assert 'smollm2_nb.model' in mods and 'smollm2_nb.hf' in mods
    code = ("import sys\nfor m in ('nbdev', 'fastcore', 'execnb'): sys.modules[m] = None\n"
            f"import importlib\nfor m in {mods!r}: importlib.import_module(m)\nprint('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr

def test_one_version_number():
    "settings.ini holds the version; the package reports it; pyproject reads it from the package."
    ini = dict(l.split(' = ', 1) for l in (ROOT / 'settings.ini').read_text().splitlines() if ' = ' in l)
    assert smollm2_nb.__version__ == ini['version']
    pp = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert 'version' in pp['project']['dynamic'] and 'version' not in pp['project']
    assert pp['tool']['setuptools']['dynamic']['version'] == {'attr': 'smollm2_nb.__version__'}

def test_console_script_params():
    out = subprocess.run(['smollm2', 'params'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '134,515,008' in out.stdout and '162,826,560' in out.stdout

def test_console_script_unknown_command():
    out = subprocess.run(['smollm2', 'fly'], capture_output=True, text=True)
    assert out.returncode == 2 and 'unknown command' in out.stderr

def test_runtime_dependencies_stay_minimal():
    deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    names = {d.split('>')[0].split('=')[0].split('<')[0].strip() for d in deps}
    assert names == {'torch', 'transformers', 'safetensors', 'tqdm', 'matplotlib', 'ipywidgets'}
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    assert any(d.startswith('nbdev==2.4.14') for d in extras['dev'])
    assert any(d.startswith('fastcore<2') for d in extras['dev']) and any(d.startswith('execnb<0.2') for d in extras['dev'])
