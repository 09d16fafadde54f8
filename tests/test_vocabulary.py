"The vocabulary check of `.ci/test`: the project's own words, not those of how it was made (`.ci/vocabulary.txt`)."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = [sys.executable, str(ROOT / '.ci' / 'check_vocabulary.py')]

def run(*files): return subprocess.run(CHECK + [str(f) for f in files], capture_output=True, text=True)

def test_flags_internal_words(tmp_path):
    # each planted line is joined here from two pieces, so that this file itself passes the check
    planted = ['| AMD EPYC (Zen 5; stop' + ' 31) |', 'see issue' + ' #22', 'fixed in #23', "shared with the other " + "session" + "s' jobs",
               "on this project's 2-core machine", 'whoever runs it on a GPU', '0.86x (target 0.8x)', 'wave' + ' 2']
    for line in planted:
        f = tmp_path / 'a.md'; f.write_text(f'text\n{line}\n')
        r = run(f)
        assert r.returncode == 1 and 'a.md:2:' in r.stdout, line

def test_keeps_legitimate_words(tmp_path):
    f = tmp_path / 'b.md'
    f.write_text('the Kaggle session; KaggleSessionError; this Kaggle session has no internet\n'
                 'kaggle-cli PR #951; see https://github.com/Kaggle/kaggle-api/pull/951 (#951)\n'
                 'SIGTERM stops the run; stop strings; the stop at <|im_end|>\n'
                 'color: #000000; .il { color: #666 }\n# %% auto #0\ntargets = y; target=play_run\n')
    r = run(f)
    assert r.returncode == 0, r.stdout

def test_tree_is_clean():
    r = run()
    assert r.returncode == 0, r.stdout
