#!/usr/bin/env bash
# The decoder tests of the ARM classes (neondot, neon) on an x86 Linux machine: a 64-bit ARM Python and PyTorch run
# under qemu-user, and the C++ step is built by the cross compiler, loaded into that PyTorch and checked against the
# plain model, as on an ARM machine. Slow (emulated: about 10x slower than native) and heavy (a 427 MB torch wheel),
# so CI runs only the lighter check of the ARM products (tests/test_decoders.py::test_kernels_match_reference).
#
#   sudo bash tools/arm_emulation.sh [pytest arguments]   # default: the tiny-config decoder tests of the ARM classes
#
# Needs root (apt-get, and a private mount namespace for an ARM /proc/cpuinfo), apt and pip registries, and
# $ARM_ROOT (default /tmp/arm, about 2 GB). What it works around, each for a reason of the emulation, not of the step:
# - PyPI's aarch64 torch wheel is a CUDA build: its CUDA libraries are replaced by empty stubs that define the symbols
#   torch's libraries name (never called: no CUDA device is used);
# - qemu-user 7.2 shows the host's /proc/cpuinfo, which crashes PyTorch's CPU detection and names x86 flags: an ARM
#   one (a Neoverse N1's flags, with asimddp) is bind-mounted over it;
# - the step is compiled by the host's cross compiler and ninja (x86 programs the emulated Python starts natively).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
R=${ARM_ROOT:-/tmp/arm}
PY=${PYTHON:-python3}
mkdir -p "$R"/debs "$R"/root "$R"/site "$R"/stubs "$R"/wheels

echo "== cross compiler, qemu, and a 64-bit ARM Python 3.11 (Debian packages, unpacked under $R/root)"
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
(cd "$R"/debs && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
   libpython3.11-dev:arm64 libc6:arm64 zlib1g:arm64 libexpat1:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 \
   liblzma5:arm64 libsqlite3-0:arm64 libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 \
   libcrypt1:arm64 libstdc++6:arm64 libgcc-s1:arm64 libgomp1:arm64 libnsl2:arm64 libtirpc3:arm64 libdb5.3:arm64 2>/dev/null)
for f in "$R"/debs/*.deb; do dpkg -x "$f" "$R"/root; done

echo "== PyTorch $($PY -c 'import torch; print(torch.__version__.split("+")[0])') for aarch64, pytest, into $R/site"
tv=$($PY -c 'import torch; print(torch.__version__.split("+")[0])')
arm=(--platform manylinux_2_28_aarch64 --python-version 3.11 --only-binary=:all: --target "$R"/site -q --disable-pip-version-check)
[ -d "$R"/site/torch ] || $PY -m pip install --no-deps "${arm[@]}" "torch==$tv"
$PY -m pip install "${arm[@]}" --upgrade filelock typing_extensions sympy networkx jinja2 fsspec numpy pytest setuptools 2>/dev/null

echo "== stubs for the CUDA libraries torch's aarch64 libraries link"
$PY - "$R" <<'EOF'
import collections, os, re, subprocess, sys
R = sys.argv[1]; lib = f'{R}/site/torch/lib'
def readelf(*a): return subprocess.run(['aarch64-linux-gnu-readelf', '-W', *a], capture_output=True, text=True).stdout
libs = [f for f in os.listdir(lib) if '.so' in f]
sonames, versioned, unversioned, ver_file = set(), collections.defaultdict(set), {}, {}
for f in libs:
    sonames |= set(re.findall(r'NEEDED\)\s+Shared library: \[(.+?)\]', readelf('-d', f'{lib}/{f}')))
    owner = None
    for line in readelf('-V', f'{lib}/{f}').splitlines():      # version needs: which library defines each version
        if m := re.search(r'File: (\S+)', line): owner = m.group(1)
        elif (m := re.search(r'Name: (\S+)', line)) and owner: ver_file[m.group(1)] = owner
    for line in readelf('--dyn-syms', f'{lib}/{f}').splitlines():
        p = line.split()
        if len(p) >= 8 and p[6] == 'UND':
            if '@' in p[7]: sym, ver = p[7].split('@', 1); versioned[ver.lstrip('@')].add((sym, p[3]))
            else: unversioned[p[7]] = p[3]
have = set(libs) | {f for d in ('lib', 'usr/lib') for f in os.listdir(f'{R}/root/{d}/aarch64-linux-gnu')}
prefix = [('cusparseLt', 'libcusparseLt.so.0'), ('nccl', 'libnccl.so.2'), ('cuFile', 'libcufile.so.0'),
          ('curand', 'libcurand.so.10'), ('nvshmem', 'libnvshmem_host.so.3'), ('nvrtc', 'libnvrtc.so.13'), ('cu', 'libcuda.so.1')]
for so in sorted(s for s in sonames if s not in have and not s.startswith('ld-linux')):
    vers = sorted(v for v, o in ver_file.items() if o == so)
    syms = {(s, k) for v in vers for s, k in versioned[v]}
    free = {(s, k) for s, k in unversioned.items() if next((o for p, o in prefix if s.startswith(p)), None) == so}
    base = f'{R}/stubs/{so.split(".so")[0]}'
    body = [f'char {s}[4096];' if k == 'OBJECT' else f'int {s}(void) {{ return 0; }}' for s, k in sorted(syms | free)]
    open(f'{base}.c', 'w').write('\n'.join(body) + '\nint smollm2_stub;\n')
    args = ['aarch64-linux-gnu-gcc', '-shared', '-fPIC', '-w', f'-Wl,-soname,{so}', '-o', f'{R}/stubs/{so}', f'{base}.c']
    if vers:
        nodes = [f'{v} {{ global: ' + ''.join(f'{s}; ' for s, _ in sorted(versioned[v] | (free if i == 0 else set()))) + '};'
                 for i, v in enumerate(vers)]
        open(f'{base}.map', 'w').write('\n'.join(nodes) + '\n'); args.insert(3, f'-Wl,--version-script={base}.map')
    subprocess.run(args, check=True)
    print(f'  {so}: {len(syms | free)} symbols')
EOF

cat > "$R"/cpuinfo <<'EOF'
processor	: 0
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd0c

processor	: 1
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd0c

EOF

ninja_dir=$(dirname "$($PY -c 'import shutil; print(shutil.which("ninja") or "")')")
[ "$ninja_dir" != . ] || { echo "ninja not found: pip install ninja"; exit 1; }
[ $# -gt 0 ] || set -- tests/test_decoders.py -k "neon and not 135m and not kernels_match"  # (kernels_match: run on the host)
echo "== under qemu-aarch64: python -m pytest $*"
exec unshare -m --propagation private bash -c '
  mount --bind "$0"/cpuinfo /proc/cpuinfo
  exec qemu-aarch64 -L "$0"/root -E LD_LIBRARY_PATH="$0"/stubs -E PYTHONPATH="$0"/site:"$1" -E CXX=aarch64-linux-gnu-g++ \
    -E CPLUS_INCLUDE_PATH="$0"/root/usr/include -E TORCH_EXTENSIONS_DIR="$0"/ext -E OMP_NUM_THREADS=2 \
    -E PATH="$2":/usr/bin:/bin -E SMOLLM2_TOKENIZER="${SMOLLM2_TOKENIZER:-}" \
    "$0"/root/usr/bin/python3.11 -m pytest -p no:cacheprovider "${@:3}"' "$R" "$repo" "$ninja_dir" "$@"
