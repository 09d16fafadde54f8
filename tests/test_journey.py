"""The library reads in one direction: model -> run -> serve -> train -> ship -> bench -> the command line. No module imports
from a later stage, at the top or inside a function; the only exceptions are the old entry points kept for one release,
which hand their arguments to the command line."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / 'smollm2_nb'
STAGES = ['model', 'run', 'serve', 'train', 'ship', 'bench', 'cli']
KEPT_FOR_ONE_RELEASE = {'cli_params', 'params_parser', 'cli_generate', 'cli_chat', 'cli_eval', 'cli_app', 'cli_demo', 'cli_data',
                        'data_parser', 'cli_train', 'train_parser', 'config_from_args', 'cli_export', 'cli_hub', 'cli_space',
                        'cli_kaggle', 'cli_bench', 'bench_parser'}

def stage(module: str) -> int | None:
    "The journey stage of `smollm2_nb.x.y` (None: the package itself, `_modidx`)."
    parts = module.split('.')[1:]
    if not parts or parts[0] in ('_modidx',): return None
    if parts[0] in ('cli', 'commands'): return STAGES.index('cli')
    return STAGES.index(parts[0]) if parts[0] in STAGES else None

def imports(path: Path):
    "(imported module, enclosing function or None) for every import in `path`."
    name = '.'.join(('smollm2_nb',) + path.relative_to(PKG).with_suffix('').parts)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(child, ast.ImportFrom):
                base = package.split('.')[:len(package.split('.')) - child.level + 1] if child.level else []
                mod = '.'.join(base + ([child.module] if child.module else []))
                yield mod, fn
            elif isinstance(child, ast.Import):
                for a in child.names: yield a.name, fn
            yield from walk(child, inner)
    return name, list(walk(ast.parse(path.read_text()), None))

def test_stage_of_a_module():
    assert stage('smollm2_nb.model.arch') == 0 and stage('smollm2_nb.bench') == 5 and stage('smollm2_nb.commands') == 6
    name, found = imports(PKG / 'serve' / 'load.py')
    assert name == 'smollm2_nb.serve.load' and any(stage(m) == 0 for m, _ in found if m.startswith('smollm2_nb.'))

def test_no_module_imports_from_a_later_stage():
    upward = []
    for path in sorted(PKG.rglob('*.py')):
        name, found = imports(path)
        here = stage(name)
        if here is None: continue
        for mod, fn in found:
            there = stage(mod) if mod.startswith('smollm2_nb.') else None
            if there is not None and there > here and not (fn in KEPT_FOR_ONE_RELEASE and mod == 'smollm2_nb.cli'):
                upward.append(f"{name} ({fn or 'top level'}) imports {mod}")
    assert not upward, '\n'.join(upward)
