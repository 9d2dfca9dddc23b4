#!/usr/bin/env python3
"""Run the README's runnable examples, as written, in order.

A fenced block whose info string is "sql runnable" is run with psql; one
whose info string is "ini runnable" is configuration (postgresql.conf
lines).  A block fenced as "text output" right after a runnable SQL block
(only blank lines between) is the output psql must print for it, exactly
(trailing blanks ignored).

    doc_check.py config README.md
        print the lines of every "ini runnable" block, in order
    doc_check.py run README.md [--psql PATH]
        run every "sql runnable" block in order, each in one psql session
        (psql -X -v ON_ERROR_STOP=1, connection from PGHOST, PGPORT, PGUSER,
        PGDATABASE); print one TAP-like line per block; exit 1 if any block
        fails: psql exits non-zero, stderr holds an ERROR, WARNING or FATAL
        line, or the output differs from its "text output" block
    doc_check.py list README.md
        print each runnable block's line and kind
"""

import os
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r'^(\s*)```(.*)$')


def blocks(path):
    """(line, info, text) of every fenced block, in order."""
    out = []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info = m.group(1), m.group(2).strip()
        start = i + 1
        body = []
        i += 1
        while i < len(lines) and not re.match(r'^\s*```\s*$', lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line)
            i += 1
        out.append({'line': start, 'info': info, 'text': '\n'.join(body) + '\n',
                    'end': i})
        i += 1
    return out, lines


def runnable(path):
    """Runnable blocks, each SQL one with its expected output (or None)."""
    found, lines = blocks(path)
    result = []
    for n, b in enumerate(found):
        if b['info'] == 'ini runnable':
            result.append({'kind': 'ini', 'line': b['line'], 'text': b['text']})
        elif b['info'] == 'sql runnable':
            expected = None
            if n + 1 < len(found) and found[n + 1]['info'] == 'text output':
                between = lines[b['end'] + 1:found[n + 1]['line'] - 1]
                if all(not l.strip() for l in between):
                    expected = found[n + 1]['text']
            result.append({'kind': 'sql', 'line': b['line'], 'text': b['text'],
                           'expected': expected})
    return result


def normalize(text):
    return '\n'.join(l.rstrip() for l in text.rstrip('\n').split('\n'))


def run(path, psql):
    failed = 0
    sql_blocks = [b for b in runnable(path) if b['kind'] == 'sql']
    if not sql_blocks:
        print('not ok 1 - no "sql runnable" block in %s' % path)
        return 1
    for n, b in enumerate(sql_blocks, 1):
        with tempfile.NamedTemporaryFile('w', suffix='.sql', delete=False) as f:
            f.write(b['text'])
            script = f.name
        try:
            p = subprocess.run([psql, '-X', '-v', 'ON_ERROR_STOP=1', '-f', script],
                               capture_output=True, text=True)
        finally:
            os.unlink(script)
        problems = []
        if p.returncode != 0:
            problems.append('psql exited with status %d' % p.returncode)
        bad = [l for l in p.stderr.split('\n')
               if re.search(r'\b(ERROR|WARNING|FATAL|PANIC):', l)]
        if bad:
            problems.append('stderr: ' + ' | '.join(bad))
        if b['expected'] is not None and normalize(p.stdout) != normalize(b['expected']):
            problems.append('output differs:\n--- expected\n%s\n--- got\n%s'
                            % (normalize(b['expected']), normalize(p.stdout)))
        what = 'README line %d%s' % (b['line'], ' (output checked)' if b['expected'] is not None else '')
        if problems:
            failed += 1
            print('not ok %d - %s' % (n, what))
            for pr in problems:
                for l in pr.split('\n'):
                    print('# ' + l)
        else:
            print('ok %d - %s' % (n, what))
    return 1 if failed else 0


def main(argv):
    if len(argv) < 3 or argv[1] not in ('config', 'run', 'list'):
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[2]
    if argv[1] == 'config':
        for b in runnable(path):
            if b['kind'] == 'ini':
                sys.stdout.write(b['text'])
        return 0
    if argv[1] == 'list':
        for b in runnable(path):
            print('%d %s%s' % (b['line'], b['kind'],
                               ' +output' if b.get('expected') is not None else ''))
        return 0
    psql = 'psql'
    if len(argv) == 5 and argv[3] == '--psql':
        psql = argv[4]
    return run(path, psql)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
