#!/usr/bin/env python3
"""Run the runnable examples of the README and of docs/, as written, in order.

A fenced block whose info string is "sql runnable" is run with psql; one
whose info string is "ini runnable" is configuration (postgresql.conf
lines).  A block fenced as "text output" right after a runnable SQL block
(only blank lines between) is the output psql must print for it, exactly
(trailing blanks ignored).

    doc_check.py config README.md [--replace OLD=NEW]...
        print the lines of the "ini runnable" blocks before the first SQL
        block: the configuration the server starts with
    doc_check.py order README.md
        print the documents whose examples run, in their order: README.md,
        then every docs/ file its "## Documentation" section links to, in
        the order of their first link.  Exit 1, saying why, if a linked
        file does not exist, does not open with its "# title" and a "What
        this is: " paragraph, or a Markdown file under docs/ is not linked,
        or a relative link of one of these documents names a file or a
        heading that does not exist
        (so a new document joins the run once the map names it, and cannot
        be left out of it)
    doc_check.py run FILE... [--psql PATH] [--conf FILE] [--replace OLD=NEW]...
        run every "sql runnable" block of the FILEs, in order, each in one
        psql session (psql -X -v ON_ERROR_STOP=1, connection from PGHOST,
        PGPORT, PGUSER, PGDATABASE); an "ini runnable" block (a runbook's
        configuration step) is appended to the --conf file, and the
        document's own next step reloads it, except those of the first
        FILE before its first SQL block: the configuration the server
        started with.  Print one TAP-like line per block; exit 1 if any
        block fails: psql exits non-zero, stderr holds an ERROR, WARNING or
        FATAL line, or the output differs from its "text output" block
    doc_check.py list FILE
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


def docs_order(readme):
    """(documents in run order, problems) from the README's map."""
    top = os.path.dirname(os.path.abspath(readme))
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    m = re.search(r'^## Documentation[ \t]*\n(.*?)(?=^## |\Z)', text, re.M | re.S)
    problems = []
    order = [readme]
    if not m:
        return order, ['%s has no "## Documentation" section' % readme]
    linked = []
    for target in re.findall(r'\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)', m.group(1)):
        if target not in linked:
            linked.append(target)
    for target in linked:
        path = os.path.join(top, target)
        if not os.path.isfile(path):
            problems.append('%s, linked from the documentation map, does not exist' % target)
            continue
        order.append(path)
        with open(path, encoding='utf-8') as f:
            head = f.read().split('\n\n', 2)
        if len(head) < 2 or not head[0].startswith('# ') or not head[1].startswith('What this is: '):
            problems.append('%s does not open with its title and a "What this is: " paragraph' % target)
    for path in order:
        problems.extend(broken_links(path, top))
    for folder, _, names in os.walk(os.path.join(top, 'docs')):
        for name in sorted(names):
            if name.endswith('.md'):
                path = os.path.relpath(os.path.join(folder, name), top)
                if path not in linked:
                    problems.append('%s is not in the documentation map of %s' % (path, os.path.basename(readme)))
    return order, problems


def slug(heading):
    """The anchor a heading gets: lower case, spaces to '-', no punctuation."""
    text = re.sub(r'[`*_]', lambda m: '_' if m.group(0) == '_' else '', heading.strip().lower())
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def prose(path):
    """A Markdown file's text outside fenced blocks."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    out, fenced = [], False
    for line in lines:
        if re.match(r'^\s*```', line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return '\n'.join(out)


def broken_links(path, top):
    """Relative links of a document to a file or heading that does not exist."""
    problems = []
    for target in re.findall(r'\]\(([^)\s]+)\)', re.sub(r'`[^`]*`', '', prose(path))):
        if re.match(r'^[a-z]+:', target):
            continue
        file, _, anchor = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        where = os.path.relpath(path, top)
        if not os.path.exists(dest):
            problems.append('%s links to %s, which does not exist' % (where, target))
        elif anchor and dest.endswith('.md'):
            anchors = {slug(h) for h in re.findall(r'^#+\s+(.*)$', prose(dest), re.M)}
            if anchor not in anchors:
                problems.append('%s links to %s, a heading that does not exist' % (where, target))
    return problems


def label(path):
    """A document's name in messages: its path under the checkout."""
    parts = os.path.abspath(path).split(os.sep)
    if 'docs' in parts:
        return '/'.join(parts[len(parts) - 1 - parts[::-1].index('docs'):])
    return os.path.basename(path)


def run(paths, psql, conf, replacements):
    failed = 0
    n = 0
    for k, path in enumerate(paths):
        blocks_ = runnable(path)
        sql = [i for i, b in enumerate(blocks_) if b['kind'] == 'sql']
        if k == 0 and not sql:
            print('not ok %d - no "sql runnable" block in %s' % (n + 1, path))
            return 1
        # The first document's leading configuration is the server's own.
        start = sql[0] if k == 0 else 0
        for b in blocks_[start:]:
            n += 1
            where = '%s line %d' % (label(path), b['line'])
            if b['kind'] == 'ini':
                if conf is None:
                    failed += 1
                    print('not ok %d - %s: configuration step, and no --conf file' % (n, where))
                    continue
                with open(conf, 'a', encoding='utf-8') as f:
                    f.write(substituted(b['text'], replacements))
                print('ok %d - %s: configuration appended' % (n, where))
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
            what = where + (' (output checked)' if b['expected'] is not None else '')
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
    if len(argv) < 3 or argv[1] not in ('config', 'run', 'list', 'order'):
        print(__doc__, file=sys.stderr)
        return 2
    args = argv[2:]
    paths = []
    while args and not args[0].startswith('--'):
        paths.append(args.pop(0))
    opts = args
    if not paths or (argv[1] != 'run' and len(paths) != 1):
        print(__doc__, file=sys.stderr)
        return 2
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
        sys.stdout.write(startup_config(paths[0], replacements))
        return 0
    if argv[1] == 'list':
        for b in runnable(paths[0]):
            print('%d %s%s' % (b['line'], b['kind'],
                               ' +output' if b.get('expected') is not None else ''))
        return 0
    if argv[1] == 'order':
        order, problems = docs_order(paths[0])
        for path in order:
            print(path)
        for problem in problems:
            print('not ok - ' + problem)
        return 1 if problems else 0
    return run(paths, psql, conf, replacements)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
