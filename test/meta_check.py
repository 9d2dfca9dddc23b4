#!/usr/bin/env python3
"""Check META.json against the PGXN Meta Spec 1.0.0 and against the tree.

The spec part follows the spec's required fields, types, enumerations and
formats (SemVer versions, version ranges, terms, licenses, tags, resources);
there is no PGXN validator among Debian's packages, so the rules are written
out here with the json and re modules only.  The tree part ties META.json to
what is actually shipped: its version is secretenv.control's default_version
(written as SemVer: 1.1 is 1.1.0), as is the Debian package's upstream
version, and the files it names exist.

Usage: test/meta_check.py [TOP]   (TOP: the source tree, default: this
script's parent's parent).  Prints one "ok"/"not ok" line per check, then
"meta: N passed, N failed"; exits 1 when a check failed.
"""
import json
import os
import re
import sys

SEMVER = (r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
          r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
          r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
SEMVER_RE = re.compile("^" + SEMVER + "$")
RANGE_ITEM = r"(?:(?:[=!]=|[<>]=?)\s*)?(?:" + SEMVER + "|0)"
RANGE_RE = re.compile("^" + RANGE_ITEM + r"(?:,\s*" + RANGE_ITEM + ")*$")
# A term: at least two characters, none a slash, backslash, space or control.
TERM_RE = re.compile(r"^[^/\\\s\x00-\x1f\x7f]{2,}$")
TAG_RE = re.compile(r"^[^/\\\x00-\x1f\x7f]{2,255}$")
URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CUSTOM_RE = re.compile(r"^[xX]_.")
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONSHIPS = {"requires", "recommends", "suggests", "conflicts"}
TOP_REQUIRED = ["name", "version", "abstract", "maintainer", "license",
                "provides", "meta-spec"]
TOP_OPTIONAL = ["description", "generated_by", "tags", "no_index", "prereqs",
                "release_status", "resources"]


class Invalid(Exception):
    pass


def require(cond, message):
    if not cond:
        raise Invalid(message)


def string(value, what, min_len=1):
    require(isinstance(value, str), "%s must be a string" % what)
    require(len(value) >= min_len, "%s must have at least %d character(s)" % (what, min_len))


def keys_allowed(obj, allowed, what):
    require(isinstance(obj, dict), "%s must be an object" % what)
    for k in obj:
        require(k in allowed or CUSTOM_RE.match(k),
                "%s has an unknown key %r (custom keys start with x_)" % (what, k))


def semver(value, what):
    string(value, what)
    require(SEMVER_RE.match(value), "%s %r is not a semantic version (like 1.1.0)" % (what, value))


def term(value, what):
    string(value, what, 2)
    require(TERM_RE.match(value), "%s %r is not a term (2+ characters, no slash, backslash or blank)" % (what, value))


def path(value, what):
    string(value, what, 2)
    require(not value.startswith("/") and "\\" not in value,
            "%s %r must be a relative path in unix convention" % (what, value))


def uri(value, what):
    string(value, what)
    require(URI_RE.match(value), "%s %r is not a URI" % (what, value))


def version_range(value, what):
    if value == 0 and not isinstance(value, bool):
        return
    string(value, what)
    require(RANGE_RE.match(value), "%s %r is not a version range" % (what, value))


# Spec checks; each takes the parsed document.
def check_top(meta):
    require(isinstance(meta, dict), "the document must be an object")
    for k in TOP_REQUIRED:
        require(k in meta, "required key %r is missing" % k)
    keys_allowed(meta, set(TOP_REQUIRED + TOP_OPTIONAL), "the document")


def check_name(meta):
    term(meta["name"], "name")


def check_version(meta):
    semver(meta["version"], "version")


def check_abstract(meta):
    string(meta["abstract"], "abstract")
    if "description" in meta:
        string(meta["description"], "description")
    if "generated_by" in meta:
        string(meta["generated_by"], "generated_by")


def check_maintainer(meta):
    m = meta["maintainer"]
    if isinstance(m, list):
        require(len(m) >= 1, "maintainer list must not be empty")
        require(len(set(map(str, m))) == len(m), "maintainer list has duplicates")
        for i, x in enumerate(m):
            string(x, "maintainer[%d]" % i)
    else:
        string(m, "maintainer")


def check_license(meta):
    lic = meta["license"]
    if isinstance(lic, str):
        require(lic in LICENSES, "license %r is not one of the spec's license strings" % lic)
    elif isinstance(lic, list):
        require(len(lic) >= 1 and len(set(map(str, lic))) == len(lic),
                "license list must be non-empty and without duplicates")
        for x in lic:
            require(x in LICENSES, "license %r is not one of the spec's license strings" % (x,))
    elif isinstance(lic, dict):
        require(len(lic) >= 1, "license object must not be empty")
        for name, url in lic.items():
            uri(url, "license %r" % name)
    else:
        raise Invalid("license must be a string, a list or an object")


def check_provides(meta):
    p = meta["provides"]
    require(isinstance(p, dict) and len(p) >= 1, "provides must be a non-empty object")
    for ext, spec in p.items():
        term(ext, "provides key")
        what = "provides.%s" % ext
        keys_allowed(spec, {"file", "version", "abstract", "docfile", "docpath"}, what)
        require("file" in spec and "version" in spec, "%s needs file and version" % what)
        path(spec["file"], what + ".file")
        semver(spec["version"], what + ".version")
        if "abstract" in spec:
            string(spec["abstract"], what + ".abstract")
        if "docfile" in spec:
            path(spec["docfile"], what + ".docfile")
        if "docpath" in spec:
            string(spec["docpath"], what + ".docpath")


def check_meta_spec(meta):
    ms = meta["meta-spec"]
    keys_allowed(ms, {"version", "url"}, "meta-spec")
    require("version" in ms, "meta-spec.version is missing")
    string(ms["version"], "meta-spec.version")
    require(re.match(r"^1\.0\.\d+$", ms["version"]), "meta-spec.version must be 1.0.x")
    if "url" in ms:
        require(ms["url"] in ("https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"),
                "meta-spec.url must be the spec's address")


def check_prereqs(meta):
    if "prereqs" not in meta:
        return
    pr = meta["prereqs"]
    keys_allowed(pr, PHASES, "prereqs")
    require(any(k in pr for k in PHASES), "prereqs names no phase")
    for phase, rels in pr.items():
        if CUSTOM_RE.match(phase):
            continue
        what = "prereqs.%s" % phase
        keys_allowed(rels, RELATIONSHIPS, what)
        require(any(k in rels for k in RELATIONSHIPS), "%s names no relationship" % what)
        for rel, deps in rels.items():
            if CUSTOM_RE.match(rel):
                continue
            require(isinstance(deps, dict) and len(deps) >= 1,
                    "%s.%s must be a non-empty object" % (what, rel))
            for name, rng in deps.items():
                term(name, "%s.%s key" % (what, rel))
                version_range(rng, "%s.%s.%s" % (what, rel, name))


def check_release_status(meta):
    if "release_status" in meta:
        require(meta["release_status"] in ("stable", "testing", "unstable"),
                "release_status must be stable, testing or unstable")


def check_resources(meta):
    if "resources" not in meta:
        return
    r = meta["resources"]
    keys_allowed(r, {"homepage", "bugtracker", "repository"}, "resources")
    require(any(k in r for k in ("homepage", "bugtracker", "repository")),
            "resources names no resource")
    if "homepage" in r:
        uri(r["homepage"], "resources.homepage")
    if "bugtracker" in r:
        b = r["bugtracker"]
        keys_allowed(b, {"web", "mailto"}, "resources.bugtracker")
        require("web" in b or "mailto" in b, "resources.bugtracker needs web or mailto")
        if "web" in b:
            uri(b["web"], "resources.bugtracker.web")
        if "mailto" in b:
            string(b["mailto"], "resources.bugtracker.mailto")
            require(EMAIL_RE.match(b["mailto"]), "resources.bugtracker.mailto is not an address")
    if "repository" in r:
        rp = r["repository"]
        keys_allowed(rp, {"url", "web", "type"}, "resources.repository")
        require(("url" in rp and "type" in rp) or "web" in rp,
                "resources.repository needs url and type, or web")
        for k in ("url", "web"):
            if k in rp:
                uri(rp[k], "resources.repository." + k)
        if "type" in rp:
            string(rp["type"], "resources.repository.type")
            require(re.match(r"^[a-z]+$", rp["type"]), "resources.repository.type must be lower case")


def check_tags(meta):
    if "tags" not in meta:
        return
    t = meta["tags"]
    require(isinstance(t, list) and len(t) >= 1, "tags must be a non-empty list")
    require(len(set(map(str, t))) == len(t), "tags has duplicates")
    for x in t:
        string(x, "tag", 2)
        require(TAG_RE.match(x), "tag %r: 2 to 255 characters, no slash, backslash or control" % x)


def check_no_index(meta):
    if "no_index" not in meta:
        return
    n = meta["no_index"]
    keys_allowed(n, {"file", "directory"}, "no_index")
    require("file" in n or "directory" in n, "no_index needs file or directory")
    for k in ("file", "directory"):
        if k not in n:
            continue
        v = n[k]
        if isinstance(v, list):
            require(len(v) >= 1 and len(set(map(str, v))) == len(v),
                    "no_index.%s must be non-empty and without duplicates" % k)
            for x in v:
                path(x, "no_index.%s item" % k)
        else:
            path(v, "no_index.%s" % k)


# Checks against the tree.
def control_settings(top):
    settings = {}
    with open(os.path.join(top, "secretenv.control"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^\s*(\w+)\s*=\s*'?([^']*)'?\s*$", line)
            if m:
                settings[m.group(1)] = m.group(2)
    return settings


def as_semver(control_version):
    """PostgreSQL's extension version 1.1 is PGXN's 1.1.0."""
    return control_version + ".0" if re.match(r"^\d+\.\d+$", control_version) else control_version


def tree_checks(top):
    control = control_settings(top)

    def check_matches_control(meta):
        require(meta["name"] == "secretenv" and "secretenv" in meta["provides"],
                "the distribution and its extension must be named secretenv")
        default = control.get("default_version")
        require(default, "secretenv.control has no default_version")
        require(meta["version"] == as_semver(default),
                "version %r is not secretenv.control's default_version %r" % (meta["version"], default))
        require(meta["provides"]["secretenv"]["version"] == meta["version"],
                "provides.secretenv.version differs from version")
        require(meta["abstract"] == control.get("comment"),
                "abstract differs from secretenv.control's comment")

    def check_files(meta):
        ext = meta["provides"]["secretenv"]
        require(ext["file"] == "sql/secretenv--%s.sql" % control.get("default_version"),
                "provides.secretenv.file must be the install script of the default version")
        for k in ("file", "docfile"):
            if k in ext:
                require(os.path.isfile(os.path.join(top, ext[k])),
                        "provides.secretenv.%s %r does not exist" % (k, ext[k]))

    def check_prereq_postgresql(meta):
        req = meta.get("prereqs", {}).get("runtime", {}).get("requires", {})
        require("PostgreSQL" in req, "prereqs.runtime.requires must name PostgreSQL")
        require(re.search(r"(^|,\s*)>=\s*15\.0\.0", str(req["PostgreSQL"])) or req["PostgreSQL"] == "15.0.0",
                "prereqs.runtime.requires.PostgreSQL must start at 15.0.0")

    def check_debian_version(meta):
        changelog = os.path.join(top, "debian", "changelog")
        require(os.path.isfile(changelog), "debian/changelog is missing")
        with open(changelog, encoding="utf-8") as f:
            m = re.match(r"^secretenv \(([^)-]+)-[^)]+\)", f.readline())
        require(m, "debian/changelog's first line names no secretenv version")
        require(m.group(1) == control.get("default_version"),
                "debian/changelog's upstream version %r is not the default_version" % m.group(1))

    return [check_matches_control, check_files, check_prereq_postgresql, check_debian_version]


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    passed = failed = 0
    try:
        with open(os.path.join(top, "META.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print("not ok - META.json is not readable JSON: %s" % e)
        print("meta: 0 passed, 1 failed")
        return 1
    checks = [check_top, check_name, check_version, check_abstract, check_maintainer,
              check_license, check_provides, check_meta_spec, check_prereqs,
              check_release_status, check_resources, check_tags, check_no_index]
    checks += tree_checks(top)
    for check in checks:
        label = check.__name__[len("check_"):]
        try:
            check(meta)
            print("ok - %s" % label)
            passed += 1
        except Invalid as e:
            print("not ok - %s: %s" % (label, e))
            failed += 1
        except (KeyError, TypeError, AttributeError) as e:
            # A later check on a document that an earlier one rejected.
            print("not ok - %s: malformed document (%s)" % (label, e))
            failed += 1
    print("meta: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
