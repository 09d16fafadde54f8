#!/usr/bin/env python3
"""Fail when a tracked file uses words from how the project was made (`.ci/vocabulary.txt`).

`python .ci/check_vocabulary.py` checks every file git tracks, plus new files git does not ignore;
`python .ci/check_vocabulary.py FILE...` checks only those files. Exit status 1 lists each hit as `path:line: text`.
"""
import re, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
rules = root / '.ci' / 'vocabulary.txt'
skip = {'.ci/vocabulary.txt', '.ci/check_vocabulary.py', 'tests/test_vocabulary.py'}  # the patterns and their tests


def load_rules(path=rules):
    deny, allow = [], []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith('#'): continue
        kind, _, pattern = line.strip().partition(' ')
        if kind not in ('deny', 'allow'): raise SystemExit(f'{path}: expected "deny REGEX" or "allow REGEX", got {line!r}')
        (deny if kind == 'deny' else allow).append(re.compile(pattern.strip(), re.IGNORECASE))
    return deny, allow


def files():
    out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sorted({p for p in out.split('\0') if p and p not in skip and (root / p).is_file()})


def hits(path, deny, allow):
    data = (root / path).read_bytes() if not Path(path).is_absolute() else Path(path).read_bytes()
    if b'\0' in data[:8192]: return  # binary
    for n, line in enumerate(data.decode('utf-8', 'replace').splitlines(), 1):
        if any(p.search(line) for p in deny) and not any(p.search(line) for p in allow):
            m = next(p.search(line) for p in deny if p.search(line))
            yield n, line.strip()[:200], m.group(0)


def main(argv):
    deny, allow = load_rules()
    found = 0
    for path in (argv or files()):
        for n, text, word in hits(path, deny, allow):
            found += 1
            print(f'{path}:{n}: [{word}] {text}')
    if found:
        print(f'FAIL: {found} line(s) use words from how the project was made (patterns: .ci/vocabulary.txt); '
              'say what the project is instead: a CPU by name and class with a date, a public link for an upstream issue')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
