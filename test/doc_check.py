#!/usr/bin/env python3
"""Run the README's runnable examples, as written, in order.

A fenced block whose info string is "sql runnable" is run with psql; one
whose info string is "ini runnable" is configuration (postgresql.conf
lines).  A block fenced as "text output" right after a runnable SQL block
(only blank lines between) is the output psql must print for it, exactly
(trailing blanks ignored).

    doc_check.py config README.md [--replace OLD=NEW]...
        print the lines of the "ini runnable" blocks before the first SQL
        block: the configuration the server starts with
    doc_check.py run README.md [--psql PATH] [--conf FILE] [--replace OLD=NEW]...
        run every "sql runnable" block in order, each in one psql session
        (psql -X -v ON_ERROR_STOP=1, connection from PGHOST, PGPORT, PGUSER,
        PGDATABASE); an "ini runnable" block after the first SQL block (a
        runbook's configuration step) is appended to FILE, and the README's
        own next step reloads it.  Print one TAP-like line per block; exit 1
        if any block fails: psql exits non-zero, stderr holds an ERROR,
        WARNING or FATAL line, or the output differs from its "text output"
        block
    doc_check.py list README.md
        print each runnable block's line and kind

--replace substitutes in configuration blocks only: a test points a path
the README names (a passphrase command) at a file of its own.
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


def substituted(text, replacements):
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def startup_config(path, replacements):
    out = []
    for b in runnable(path):
        if b['kind'] == 'sql':
            break
        out.append(substituted(b['text'], replacements))
    return ''.join(out)


def run(path, psql, conf, replacements):
    failed = 0
    blocks_ = runnable(path)
    if not any(b['kind'] == 'sql' for b in blocks_):
        print('not ok 1 - no "sql runnable" block in %s' % path)
        return 1
    first_sql = min(k for k, b in enumerate(blocks_) if b['kind'] == 'sql')
    n = 0
    for b in blocks_[first_sql:]:
        n += 1
        if b['kind'] == 'ini':
            if conf is None:
                failed += 1
                print('not ok %d - README line %d: configuration step, and no --conf file' % (n, b['line']))
                continue
            with open(conf, 'a', encoding='utf-8') as f:
                f.write(substituted(b['text'], replacements))
            print('ok %d - README line %d: configuration appended' % (n, b['line']))
            continue
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
    opts = argv[3:]
    psql, conf, replacements = 'psql', None, []
    while opts:
        if len(opts) < 2 or opts[0] not in ('--psql', '--conf', '--replace'):
            print(__doc__, file=sys.stderr)
            return 2
        if opts[0] == '--psql':
            psql = opts[1]
        elif opts[0] == '--conf':
            conf = opts[1]
        else:
            old, _, new = opts[1].partition('=')
            replacements.append((old, new))
        opts = opts[2:]
    if argv[1] == 'config':
        sys.stdout.write(startup_config(path, replacements))
        return 0
    if argv[1] == 'list':
        for b in runnable(path):
            print('%d %s%s' % (b['line'], b['kind'],
                               ' +output' if b.get('expected') is not None else ''))
        return 0
    return run(path, psql, conf, replacements)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
