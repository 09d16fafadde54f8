"Checks of the installed package that the notebooks cannot make about themselves."
import importlib, pkgutil, subprocess, sys, tomllib
from pathlib import Path
import smollm2_nb

ROOT = Path(__file__).resolve().parents[1]

# modules whose optional extras (gradio, kaggle) may be absent in a minimal install
OPTIONAL = {'smollm2_nb.serve.app', 'smollm2_nb.ship.kaggle_client'}

def test_library_imports_without_nbdev_or_fastcore():
    "Every module imports with nbdev, fastcore and execnb made unimportable."
    mods = [m.name for m in pkgutil.walk_packages(smollm2_nb.__path__, 'smollm2_nb.') if m.name not in OPTIONAL]
    assert 'smollm2_nb.model.arch' in mods and 'smollm2_nb.model.hf' in mods
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

def _reqs(specs):
    from packaging.requirements import Requirement
    return {r.name.lower().replace('_', '-'): r.specifier for r in map(Requirement, specs)}

def test_runtime_dependencies_stay_minimal():
    deps = _reqs(tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies'])
    assert set(deps) == {'torch', 'transformers', 'safetensors', 'tqdm', 'matplotlib', 'ipywidgets'}

def test_dependencies_pinned_to_tested_ranges():
    "Every requirement but torch has an upper bound, so a new major release cannot break a fresh install; nbdev's needs hold."
    pp = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    reqs = _reqs(pp['dependencies'])
    for extra in pp['optional-dependencies'].values(): reqs.update(_reqs(extra))
    unbounded = [n for n, spec in reqs.items() if n not in ('torch', 'six') and not any(s.operator in ('<', '<=', '==', '~=') for s in spec)]
    assert not unbounded, f"no upper bound on {unbounded}"
    assert '2.4.14' in reqs['nbdev'] and '2.4.15' not in reqs['nbdev']
    assert '2.0' not in reqs['fastcore'] and '0.2.0' not in reqs['execnb']   # nbdev 2.4.14 needs fastcore<2, execnb<0.2
    assert '9.2.0' in reqs['pytest']                                         # the release that broke approx(None) passes now
