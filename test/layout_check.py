#!/usr/bin/env python3
"""Check the source layout the README promises.

- no two modules of src/ include each other, directly or through others
  (a module is a .c file and its header: keyring.c and keyring.h are
  "keyring");
- src/crypto/ includes no PostgreSQL header: only the C library, OpenSSL
  and its own headers;
- the README's Layout section names every file of src/ and no file that
  is not there.

Usage: test/layout_check.py [TOP]   (TOP: the source tree, default: this
script's parent's parent).  Prints one "ok"/"not ok" line per check, then
"layout: N passed, N failed"; exits 1 when a check failed.
"""
import os
import re
import sys

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)
# What src/crypto/ may include with <...>: the C library and OpenSSL.
CRYPTO_SYSTEM_RE = re.compile(r"^(openssl/[a-z0-9_]+\.h|[a-z]+\.h|sys/[a-z]+\.h)$")
SOURCE_RE = re.compile(r"\.(c|h)$")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok - " + what)
        else:
            self.failed += 1
            print("not ok - " + what + (": " + detail if detail else ""))


def source_files(top):
    """Paths of src/ .c and .h files, relative to top."""
    found = []
    for folder, _, names in os.walk(os.path.join(top, "src")):
        for name in names:
            if SOURCE_RE.search(name):
                found.append(os.path.relpath(os.path.join(folder, name), top))
    return sorted(found)


def module_of(path):
    return os.path.splitext(path)[0]


def local_includes(top, path):
    """The quoted includes of a file, resolved like the compiler does."""
    with open(os.path.join(top, path), encoding="utf-8") as f:
        text = f.read()
    result = []
    for kind, name in INCLUDE_RE.findall(text):
        result.append((kind, name))
    return result


def resolve(top, path, name):
    """A quoted include of ours: next to the file, then in src/ and
    src/crypto/; None for a header of the PostgreSQL server."""
    for folder in (os.path.dirname(path), "src", "src/crypto"):
        candidate = os.path.normpath(os.path.join(folder, name))
        if os.path.exists(os.path.join(top, candidate)):
            return candidate
    return None


def find_cycle(graph):
    """One cycle of the module graph as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if state.get(succ) == "open":
                return stack[stack.index(succ):] + [succ]
            if succ not in state:
                cycle = visit(succ, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def layout_section(top):
    with open(os.path.join(top, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.find("\n## Layout\n")
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def named_in_layout(section, path):
    """Whether the section names a file: "name.c", "name.h" or "name.c/.h"."""
    stem, ext = os.path.splitext(os.path.basename(path))
    forms = [stem + ext]
    if ext in (".c", ".h"):
        forms.append(stem + ".c/.h")
    return any(re.search(r"(?<![\w.])" + re.escape(form) + r"(?![\w])", section)
               for form in forms)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checks = Checks()
    files = source_files(top)
    checks.check(len(files) > 0, "src/ has source files")

    graph = {}
    for path in files:
        module = module_of(path)
        graph.setdefault(module, set())
        for kind, name in local_includes(top, path):
            if kind == "<":
                if path.startswith("src/crypto/"):
                    checks.check(CRYPTO_SYSTEM_RE.match(name) is not None,
                                 "%s includes only libc and OpenSSL headers: <%s>" % (path, name))
                continue
            target = resolve(top, path, name)
            if target is None:
                # Not ours: a header of the PostgreSQL server.
                checks.check(not path.startswith("src/crypto/"),
                             "%s includes no PostgreSQL header: \"%s\"" % (path, name))
                continue
            if path.startswith("src/crypto/"):
                checks.check(target.startswith("src/crypto/"),
                             "%s includes only the core's own headers: \"%s\"" % (path, name))
            if module_of(target) != module:
                graph[module].add(module_of(target))

    cycle = find_cycle(graph)
    checks.check(cycle is None, "no include cycle between the modules of src/",
                 " -> ".join(cycle) if cycle else "")

    section = layout_section(top)
    checks.check(section is not None, "README.md has a Layout section")
    if section is not None:
        for path in files:
            checks.check(named_in_layout(section, path),
                         "the README's Layout names %s" % path)
        listed = set(re.findall(r"(?<![\w./])([a-z_]+\.(?:c|h))(?![\w/])", section))
        listed |= {stem + ext for stem in re.findall(r"(?<![\w./])([a-z_]+)\.c/\.h", section)
                   for ext in (".c", ".h")}
        basenames = {os.path.basename(p) for p in files}
        for name in sorted(listed):
            checks.check(name in basenames, "%s, named in the README's Layout, is in src/" % name)

    print("layout: %d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
