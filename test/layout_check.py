#!/usr/bin/env python3
"""Check the source layout docs/layout.md describes.

- every .c and .h file of src/ sits in a folder that docs/layout.md
  declares as an area (a line "src/<area>/  ..." of its "src/ by area"
  section), and the page lists it under that area; every file the page
  lists is there;
- no two modules of src/ include each other, directly or through others
  (a module is a .c file and its header: keys/keyring.c and keys/keyring.h
  are "src/keys/keyring"); our includes are written from src/
  ("keys/keyring.h"), except the cryptographic core's own;
- no two files of src/ call each other, directly or through others: from
  the built object files, each file's undefined symbols (nm) against the
  symbols the other files define;
- src/crypto/ includes no PostgreSQL header: only the C library, OpenSSL
  and its own headers.

Usage: test/layout_check.py [TOP [BUILD]]   (TOP: the source tree, default:
this script's parent's parent; BUILD: where the object files are, src/x.o
for src/x.c, default: TOP, as after an in-tree `make`).  Prints one
"ok"/"not ok" line per check, then "layout: N passed, N failed"; exits 1
when a check failed.
"""
import os
import re
import subprocess
import sys

from check_report import Checks

DOC = "docs/layout.md"
SECTION = "## src/ by area"
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)
# What src/crypto/ may include with <...>: the C library and OpenSSL.
CRYPTO_SYSTEM_RE = re.compile(r"^(openssl/[a-z0-9_]+\.h|[a-z]+\.h|sys/[a-z]+\.h)$")
SOURCE_RE = re.compile(r"\.(c|h)$")
# In the section's tree: "src/keys/   what the area is", then "  keyring.c/.h   what it does".
AREA_LINE_RE = re.compile(r"^(src/(?:[a-z0-9_]+/)*)(?:\s|$)")
FILE_LINE_RE = re.compile(r"^  ([a-z0-9_]+)(\.c/\.h|\.c|\.h)(?:\s|$)")
# nm's types of a symbol a file needs from elsewhere.
UNDEFINED_TYPES = ("U", "w", "v")



def source_files(top):
    """Paths of src/ .c and .h files, relative to top."""
    found = []
    for folder, _, names in os.walk(os.path.join(top, "src")):
        for name in names:
            if SOURCE_RE.search(name):
                found.append(os.path.relpath(os.path.join(folder, name), top))
    return sorted(found)


def area_of(path):
    return os.path.dirname(path) + "/"


def module_of(path):
    return os.path.splitext(path)[0]


def read(top, path):
    with open(os.path.join(top, path), encoding="utf-8") as f:
        return f.read()


def layout_areas(top):
    """{area: set of file names} from the doc's "src/ by area" section, or
    None when the page or the section is missing."""
    try:
        text = read(top, DOC)
    except OSError:
        return None
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    areas = {}
    current = None
    for line in text[start:end if end >= 0 else len(text)].split("\n"):
        area = AREA_LINE_RE.match(line)
        if area:
            current = areas.setdefault(area.group(1), set())
            continue
        if line[:1] not in ("", " "):
            current = None          # another top-level line ends the area
            continue
        listed = FILE_LINE_RE.match(line)
        if listed and current is not None:
            stem, ext = listed.groups()
            exts = (".c", ".h") if ext == ".c/.h" else (ext,)
            current.update(stem + e for e in exts)
    return areas


def resolve(top, path, name):
    """A quoted include of ours, as the compiler finds it: next to the file,
    then in src/ (the only -I of the build); None for a header of the
    PostgreSQL server."""
    for folder in (os.path.dirname(path), "src"):
        candidate = os.path.normpath(os.path.join(folder, name))
        if os.path.exists(os.path.join(top, candidate)):
            return candidate
    return None


def find_cycle(graph):
    """One cycle of a graph {node: successors} as a list of nodes, or None."""
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


def check_layout(top, files, checks):
    areas = layout_areas(top)
    checks.check(areas is not None and len(areas) > 0,
                 "%s has a \"%s\" section declaring the areas" % (DOC, SECTION[3:]))
    if not areas:
        return
    for path in files:
        area = area_of(path)
        name = os.path.basename(path)
        if area not in areas:
            checks.check(False, "%s, holding %s, is an area of %s" % (area, path, DOC))
            continue
        elsewhere = sorted(a for a, names in areas.items() if name in names and a != area)
        checks.check(name in areas[area], "%s lists %s under %s" % (DOC, path, area),
                     "it lists it under " + ", ".join(elsewhere) if elsewhere else "")
    for area in sorted(areas):
        checks.check(os.path.isdir(os.path.join(top, area)), "the area %s is a folder" % area)
        for name in sorted(areas[area]):
            path = area + name
            checks.check(os.path.exists(os.path.join(top, path)),
                         "%s, listed in %s, is there" % (path, DOC))


def check_includes(top, files, checks):
    graph = {}
    for path in files:
        module = module_of(path)
        in_core = path.startswith("src/crypto/")
        graph.setdefault(module, set())
        for kind, name in INCLUDE_RE.findall(read(top, path)):
            if kind == "<":
                if in_core:
                    checks.check(CRYPTO_SYSTEM_RE.match(name) is not None,
                                 "%s includes only libc and OpenSSL headers: <%s>" % (path, name))
                continue
            target = resolve(top, path, name)
            if target is None:
                # Not ours: a header of the PostgreSQL server.
                checks.check(not in_core,
                             "%s includes no PostgreSQL header: \"%s\"" % (path, name))
                continue
            if in_core:
                checks.check(target.startswith("src/crypto/"),
                             "%s includes only the core's own headers: \"%s\"" % (path, name))
            else:
                checks.check(target == os.path.normpath(os.path.join("src", name)),
                             "%s includes our headers from src/: \"%s\"" % (path, name),
                             "write \"%s\"" % os.path.relpath(target, "src"))
            if module_of(target) != module:
                graph[module].add(module_of(target))

    cycle = find_cycle(graph)
    checks.check(cycle is None, "no include cycle between the modules of src/",
                 " -> ".join(cycle) if cycle else "")


def symbols(obj):
    """(defined, undefined) external symbols of an object file."""
    out = subprocess.run(["nm", "-g", "-P", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        (undefined if fields[1] in UNDEFINED_TYPES else defined).add(fields[0])
    return defined, undefined


def check_calls(top, build, files, checks):
    sources = [p for p in files if p.endswith(".c")]
    objects = {p: os.path.join(build, module_of(p) + ".o") for p in sources}
    missing = [p for p in sources if not os.path.exists(objects[p])]
    checks.check(not missing, "every .c file of src/ is built (the calls are read from its object file)",
                 "no object file for " + ", ".join(missing) + "; run make first" if missing else "")
    if missing:
        return
    defined_by = {}
    needs = {}
    try:
        for path in sources:
            defined, needs[path] = symbols(objects[path])
            for symbol in defined:
                defined_by[symbol] = path
    except (OSError, subprocess.CalledProcessError) as e:
        checks.check(False, "nm reads the object files", str(e))
        return
    graph = {}
    called = {}
    for path in sources:
        graph[path] = set()
        for symbol in sorted(needs[path]):
            target = defined_by.get(symbol)
            if target is not None and target != path:
                graph[path].add(target)
                called.setdefault((path, target), symbol)
    cycle = find_cycle(graph)
    detail = ""
    if cycle:
        detail = cycle[0] + "".join(" -(%s)-> %s" % (called[(a, b)], b)
                                    for a, b in zip(cycle, cycle[1:]))
    checks.check(cycle is None, "no call cycle between the files of src/", detail)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = sys.argv[2] if len(sys.argv) > 2 else top
    checks = Checks()
    files = source_files(top)
    checks.check(len(files) > 0, "src/ has source files")
    check_layout(top, files, checks)
    check_includes(top, files, checks)
    check_calls(top, build, files, checks)
    print("layout: %d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
