"`smollm2 chat` in a real terminal (a pseudo-terminal): Ctrl-C stops a streaming reply and keeps the session; Ctrl-C at the prompt clears the line; /quit leaves."
from __future__ import annotations
import os, pty, select, sys, time
from pathlib import Path
import pytest
from test_app_chat import CHATML, tiny_folder


class Terminal:
    "The master side of a pseudo-terminal, read up to a string at a time (what follows it stays for the next read)."
    def __init__(self, fd): self.fd, self.pending = fd, b''

    def expect(self, needle: bytes, timeout: float = 120) -> bytes:
        "Everything shown up to and including `needle` (fail after `timeout` seconds without it)."
        end = time.monotonic() + timeout
        while needle not in self.pending:
            left = end - time.monotonic()
            if left <= 0: raise AssertionError(f'{needle!r} not shown within {timeout} s; the terminal showed: {self.pending[-2000:]!r}')
            if select.select([self.fd], [], [], left)[0]:
                try: chunk = os.read(self.fd, 4096)
                except OSError: chunk = b''      # the child closed the terminal
                if not chunk: raise AssertionError(f'the program ended before showing {needle!r}: {self.pending[-2000:]!r}')
                self.pending += chunk
        i = self.pending.index(needle) + len(needle)
        shown, self.pending = self.pending[:i], self.pending[i:]
        return shown

    def type(self, keys: bytes): os.write(self.fd, keys)

    def reading(self, pid: int, timeout: float = 30):
        "Wait until the program sits in its read of the terminal. Keys typed while readline is still setting the line up after\n        drawing its prompt can be lost (seen here: 'abc' and Ctrl-C typed the moment the prompt showed after a stopped reply\n        never reached it, 3 runs in 4); a person does not type within those milliseconds, a test does."
        wchan, end = Path(f'/proc/{pid}/wchan'), time.monotonic() + timeout
        if not wchan.exists(): time.sleep(0.5); return            # no /proc (macOS): a pause instead
        while not any(w in wchan.read_text() for w in ('poll', 'select')):
            if time.monotonic() > end: raise AssertionError(f'the program did not wait for input within {timeout} s')
            time.sleep(0.01)


@pytest.mark.skipif(not hasattr(pty, 'fork'), reason='needs a POSIX pseudo-terminal')
def test_ctrl_c_stops_the_reply_and_keeps_the_session(tmp_path):
    folder = tiny_folder(tmp_path / 'chat', CHATML)
    argv = [sys.executable, '-m', 'smollm2_nb.cli', 'chat', '--model', str(folder), '--precision', 'fp32',
            '--max-new-tokens', '900', '--temperature', '1.0', '--seed', '0']
    pid, fd = pty.fork()        # the child gets the pseudo-terminal as its controlling terminal: \x03 there is a real Ctrl-C
    if pid == 0:
        os.execvpe(argv[0], argv, {**os.environ, 'TERM': 'dumb'})
    term = Terminal(fd)
    try:
        term.expect(b'Ctrl-C stops a reply', 300)          # the interactive banner: stdin is a terminal
        term.expect(b'> ')
        term.reading(pid)
        term.type(b'hello\r')
        term.expect(b'hello\r\n')                       # the line echoed; the reply streams after it
        reply = term.expect(b' ', 60)                    # some of the reply is shown (a random tiny model rambles on)
        term.type(b'\x03')                              # Ctrl-C during the reply
        reply += term.expect(b'[stopped]', 60)
        assert len(reply) > 1, reply
        term.expect(b'> ', 30)                        # the session goes on: a new prompt
        term.reading(pid)
        term.type(b'abc\x03')                         # Ctrl-C at the prompt clears the line and says how to leave
        term.expect(b'/quit to leave', 30)
        term.expect(b'> ', 30); term.reading(pid)
        term.type(b'/reset\r')
        term.expect(b'(conversation reset)', 30)
        term.expect(b'> ', 30); term.reading(pid)
        term.type(b'/quit\r')
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try: os.kill(pid, 9); os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError): pass
        os.close(fd)
