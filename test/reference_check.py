#!/usr/bin/env python3
"""Check docs/reference.md against the code.

- every SQLSTATE secretenv raises is a row of the SQLSTATE table, and every
  code of the table is raised somewhere.  Raised means: errcode(ERRCODE_X)
  or GUC_check_errcode(ERRCODE_X) in a .c file under src/ (any depth), X
  resolved through secretenv's MAKE_SQLSTATE defines (src/**/*.h) or
  PostgreSQL's utils/errcodes.h; a RAISE (not NOTICE, INFO, LOG or DEBUG)
  in the install script sql/secretenv--<default_version>.sql or an upgrade
  script sql/secretenv--A--B.sql, with its ERRCODE, condition or SQLSTATE
  (P0001 when it names none); and what PostgreSQL raises for a construct of
  the install script: 23514 for a CHECK constraint, 2D000 for a procedure
  that commits;
- every setting a DefineCustom*Variable call under src/ defines is a row of
  the settings table, whose default column starts with the boot value as
  pg_settings.boot_val prints it (`on`/`off`, a number, the string, `''` for
  an empty one, the enum's name), and every row is such a setting;
- every function, procedure, view, table and type the install script
  creates in schema secretenv is named in docs/reference.md.

Usage: test/reference_check.py TOP [--errcodes PATH/utils/errcodes.h]
       test/reference_check.py TOP --list-settings
The first prints one "ok"/"not ok" line per check, then "reference: N
passed, N failed", and exits 1 when a check failed; errcodes.h defaults to
the one under `pg_config --includedir-server`.  The second prints
"name<TAB>default" for each setting the code defines.
"""
import os
import re
import subprocess
import sys

from check_report import Checks

SQLSTATE_RE = re.compile(r'^[0-9A-Z]{5}$')



def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def files_under(top, folder, suffixes):
    found = []
    for d, _, names in os.walk(os.path.join(top, folder)):
        for name in names:
            if name.endswith(suffixes):
                found.append(os.path.join(d, name))
    return sorted(found)


def rel(top, path):
    return os.path.relpath(path, top)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def strip_comments(text, quotes, line_comment, backslash):
    """Block comments (/* */) and line comments blanked out, line breaks and
    quoted literals kept.  backslash: a backslash escapes the next character
    in a literal (C); otherwise a doubled quote does (SQL)."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in quotes:
            j = i + 1
            while j < n:
                if backslash and text[j] == "\\":
                    j += 2
                elif not backslash and text[j] == c and j + 1 < n and text[j + 1] == c:
                    j += 2
                elif text[j] == c:
                    break
                else:
                    j += 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i) or text.startswith(line_comment, i):
            end = "*/" if text.startswith("/*", i) else "\n"
            j = text.find(end, i + 2)
            j = n if j < 0 else (j + 2 if end == "*/" else j)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_c_comments(text):
    return strip_comments(text, "\"'", "//", True)


def strip_sql_comments(text):
    return strip_comments(text, "'", "--", False)


# --- SQLSTATEs --------------------------------------------------------------

def sqlstate_of(chars):
    """MAKE_SQLSTATE('2','2','S','0','1') arguments -> '22S01'."""
    return "".join(re.findall(r"'(.)'", chars))


def errcode_macros(top, errcodes_h):
    macros = {}
    for path in [errcodes_h] + files_under(top, "src", (".h", ".c")):
        for m in re.finditer(r"#\s*define\s+(ERRCODE_[A-Z0-9_]+)\s+MAKE_SQLSTATE\(([^)]*)\)", read(path)):
            macros.setdefault(m.group(1), sqlstate_of(m.group(2)))
    return macros


def raised_in_c(top, macros):
    """{sqlstate: [where, ...]}, and the macros that did not resolve."""
    raised, unknown = {}, []
    for path in files_under(top, "src", (".c",)):
        text = strip_c_comments(read(path))
        for m in re.finditer(r"\b(?:GUC_check_)?errcode\(\s*(ERRCODE_[A-Z0-9_]+)\s*\)", text):
            where = "%s:%d" % (rel(top, path), line_of(text, m.start()))
            code = macros.get(m.group(1))
            if code is None:
                unknown.append("%s (%s)" % (m.group(1), where))
            else:
                raised.setdefault(code, []).append(where)
    return raised, unknown


def default_version(top):
    m = re.search(r"^\s*default_version\s*=\s*'([^']+)'", read(os.path.join(top, "secretenv.control")), re.M)
    return m.group(1)


def sql_scripts(top):
    """The install script of the default version and every upgrade script."""
    install = os.path.join(top, "sql", "secretenv--%s.sql" % default_version(top))
    upgrades = [p for p in files_under(top, "sql", (".sql",))
                if re.match(r"secretenv--[^-]+--[^-]+\.sql$", os.path.basename(p))]
    return install, [install] + upgrades


def statement_end(text, start):
    """Index of the ';' that ends the PL/pgSQL statement at start."""
    i = start
    while i < len(text):
        if text[i] == "'":
            j = i + 1
            while j < len(text):
                if text[j] == "'" and j + 1 < len(text) and text[j + 1] == "'":
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    j += 1
            i = j + 1
        elif text[i] == ";":
            return i
        else:
            i += 1
    return len(text)


def condition_code(name, macros):
    """A PL/pgSQL condition name or a quoted SQLSTATE -> SQLSTATE."""
    if SQLSTATE_RE.match(name):
        return name
    return macros.get("ERRCODE_" + name.upper())


def raised_in_sql(top, macros):
    raised, unknown = {}, []
    install, scripts = sql_scripts(top)
    for path in scripts:
        text = strip_sql_comments(read(path))
        for m in re.finditer(r"\bRAISE\b", text, re.I):
            stmt = text[m.end():statement_end(text, m.end())]
            where = "%s:%d" % (rel(top, path), line_of(text, m.start()))
            words = stmt.split()
            level = words[0].upper() if words else ""
            if level in ("NOTICE", "INFO", "LOG", "DEBUG"):
                continue
            code = None
            e = re.search(r"\bERRCODE\s*=\s*'([^']+)'", stmt, re.I)
            s = re.match(r"\s*(?:EXCEPTION|WARNING)?\s*SQLSTATE\s+'([0-9A-Z]{5})'", stmt, re.I)
            c = re.match(r"\s*(?:EXCEPTION|WARNING)?\s*([a-z_]+)\b", stmt, re.I)
            if e:
                code = condition_code(e.group(1), macros)
                name = e.group(1)
            elif s:
                code = name = s.group(1)
            elif c and c.group(1).upper() not in ("EXCEPTION", "WARNING", "USING"):
                code = condition_code(c.group(1), macros)
                name = c.group(1)
            elif level == "WARNING":
                continue
            else:
                code = name = "P0001"
            if code is None:
                unknown.append("%s (%s)" % (name, where))
            else:
                raised.setdefault(code, []).append(where)
    # What PostgreSQL raises for constructs of the install script.
    text = strip_sql_comments(read(install))
    for m in re.finditer(r"\bCHECK\s*\(", text):
        raised.setdefault("23514", []).append("%s:%d (CHECK constraint)" % (rel(top, install), line_of(text, m.start())))
    for m in re.finditer(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?PROCEDURE\b(.*?)\$\$(.*?)\$\$", text, re.S | re.I):
        if re.search(r"\bCOMMIT\b", m.group(2), re.I):
            raised.setdefault("2D000", []).append("%s:%d (procedure that commits)" % (rel(top, install), line_of(text, m.start())))
    return raised, unknown


def section(text, title):
    """The lines of the '## title' section of a Markdown text."""
    m = re.search(r"^## %s[ \t]*\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.M | re.S)
    return m.group(1) if m else None


def table_sqlstates(doc):
    """{sqlstate: row number} of the SQLSTATE table."""
    codes = {}
    body = section(doc, "SQLSTATEs")
    if body is None:
        return None
    n = 0
    for line in body.split("\n"):
        if not line.startswith("| `"):
            continue
        n += 1
        first = line.split(" | ")[0]
        for code in re.findall(r"`([0-9A-Z]{5})`", first):
            codes.setdefault(code, n)
    return codes


# --- settings ---------------------------------------------------------------

def split_args(text):
    """Top-level comma-separated arguments of a C call's argument text."""
    args, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    args.append("".join(cur).strip())
    return args


def call_args(text, start):
    """The argument text of the call whose '(' is at start."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return text[start + 1:]


def c_defines(sources):
    defines = {}
    for text in sources.values():
        for m in re.finditer(r"^\s*#\s*define\s+([A-Za-z_]\w*)\s+(.+?)\s*$", text, re.M):
            defines.setdefault(m.group(1), m.group(2))
    return defines


def literal(expr, defines, depth=0):
    """Value of a C constant expression: a string, an int, a bool."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        expr = expr[1:-1].strip()
    if expr.startswith('"'):
        return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', expr))
    if expr == "NULL":
        return ""
    if expr in ("true", "false"):
        return expr == "true"
    if re.match(r"^-?\d+$", expr):
        return int(expr)
    if expr in defines and depth < 5:
        return literal(defines[expr], defines, depth + 1)
    return None


def enum_name(sources, array, value):
    """The name of value in a config_enum_entry array."""
    for text in sources.values():
        m = re.search(r"\b%s\s*\[\s*\]\s*=\s*\{(.*?)\};" % re.escape(array), text, re.S)
        if m:
            for name, ident in re.findall(r'\{\s*"([^"]*)"\s*,\s*([A-Za-z_0-9]+)\s*,\s*false\s*\}', m.group(1)):
                if ident == value:
                    return name
    return None


def defined_settings(top):
    """[(name, default as boot_val prints it or None, where)]."""
    sources = {p: strip_c_comments(read(p)) for p in files_under(top, "src", (".c", ".h"))}
    defines = c_defines(sources)
    found = []
    for path, text in sorted(sources.items()):
        if not path.endswith(".c"):
            continue
        for m in re.finditer(r"\bDefineCustom(Bool|Int|Real|String|Enum)Variable\s*\(", text):
            args = split_args(call_args(text, m.end() - 1))
            name = literal(args[0], defines)
            kind = m.group(1)
            boot = args[4]
            if kind == "Enum":
                value = enum_name(sources, args[5], boot.strip())
            else:
                value = literal(boot, defines)
                if kind == "Bool" and isinstance(value, bool):
                    value = "on" if value else "off"
                elif value is not None:
                    value = str(value)
            found.append((name, value, "%s:%d" % (rel(top, path), line_of(text, m.start()))))
    return found


def table_settings(doc):
    """{name: default code span} of the settings table."""
    body = section(doc, "Settings")
    if body is None:
        return None
    rows = {}
    for line in body.split("\n"):
        m = re.match(r"^\| `(secretenv\.[a-z0-9_]+)` \|", line)
        if not m:
            continue
        cells = re.split(r"(?<!\\)\|", line)
        default = cells[3].strip() if len(cells) > 3 else ""
        d = re.match(r"^`([^`]*)`", default)
        value = d.group(1) if d else None
        if value == "''":
            value = ""
        rows[m.group(1)] = value
    return rows


# --- SQL objects ------------------------------------------------------------

def created_objects(top):
    install, _ = sql_scripts(top)
    text = strip_sql_comments(read(install))
    names = set()
    for m in re.finditer(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW|TABLE|TYPE)\s+secretenv\.(\w+)", text, re.I):
        names.add((m.group(1).lower(), m.group(2)))
    return sorted(names)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    top = argv[1]
    if argv[2:] == ["--list-settings"]:
        for name, value, _ in defined_settings(top):
            print("%s\t%s" % (name, value))
        return 0
    errcodes_h = None
    if len(argv) == 4 and argv[2] == "--errcodes":
        errcodes_h = argv[3]
    elif len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if errcodes_h is None:
        inc = subprocess.run(["pg_config", "--includedir-server"], capture_output=True, text=True).stdout.strip()
        errcodes_h = os.path.join(inc, "utils", "errcodes.h")

    checks = Checks()
    doc_path = os.path.join(top, "docs", "reference.md")
    doc = read(doc_path) if os.path.exists(doc_path) else ""
    checks.check(bool(doc), "docs/reference.md exists")

    macros = errcode_macros(top, errcodes_h)
    c_raised, c_unknown = raised_in_c(top, macros)
    sql_raised, sql_unknown = raised_in_sql(top, macros)
    checks.check(not c_unknown and not sql_unknown, "every raised condition resolves to a SQLSTATE",
                 ", ".join(c_unknown + sql_unknown))
    raised = {}
    for source in (c_raised, sql_raised):
        for code, where in source.items():
            raised.setdefault(code, []).extend(where)

    table = table_sqlstates(doc)
    checks.check(table is not None, "docs/reference.md has a SQLSTATEs section")
    table = table or {}
    for code in sorted(raised):
        checks.check(code in table, "SQLSTATE %s is in the SQLSTATE table" % code,
                     "raised at " + ", ".join(raised[code][:3]))
    for code in sorted(table):
        checks.check(code in raised, "SQLSTATE %s of the table is raised by the code" % code,
                     "row %d names it, but no errcode(), RAISE or construct of the scripts raises it" % table[code])

    settings = defined_settings(top)
    rows = table_settings(doc)
    checks.check(rows is not None, "docs/reference.md has a Settings section")
    rows = rows or {}
    defined = {}
    for name, value, where in settings:
        defined[name] = value
        checks.check(value is not None, "the default of %s is a constant" % name, "at " + where)
        checks.check(name in rows, "%s is in the settings table" % name, "defined at " + where)
        if name in rows:
            checks.check(rows[name] == value, "the settings table gives %s its default" % name,
                         "table: %r, code (%s): %r" % (rows[name], where, value))
    for name in sorted(rows):
        checks.check(name in defined, "%s of the settings table is defined by the code" % name,
                     "no DefineCustom*Variable under src/ defines it")

    for kind, name in created_objects(top):
        checks.check(re.search(r"`(?:[^`]*\b)?%s\b" % re.escape(name), doc) is not None,
                     "%s secretenv.%s is in docs/reference.md" % (kind, name))

    print("reference: %d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
