#!/usr/bin/python3
"""A small secretenv client, written the way an application would be.

It uses Debian's python3-psycopg2 and passes every secret value as a query
parameter, never by formatting SQL itself.  Note that psycopg2 (2.x) always
interpolates parameters on the client side: the server receives a simple
query whose text contains the quoted literal, so the server's statement log
would show the plaintext unless secretenv.redact_logs rewrites the record.
(psycopg2 has no way to send extended-protocol bind parameters; the test
that runs this program covers those separately with pgbench -M extended.)

Usage:  client.py store  INPUT.json
        client.py rotate INPUT.json
Connection: PGHOST, PGPORT, PGDATABASE from the environment; the application
role is SECRETENV_APP_USER, the administrator SECRETENV_ADMIN_USER.
Prints one JSON object with the results on stdout.
"""

import json
import os
import sys

import psycopg2
import psycopg2.errors
import psycopg2.extras


class Client:
    """A connection that counts the statements it sends."""

    def __init__(self, user):
        self.conn = psycopg2.connect(
            host=os.environ["PGHOST"],
            port=os.environ["PGPORT"],
            dbname=os.environ.get("PGDATABASE", "postgres"),
            user=user,
            application_name="secretenv-python-client",
        )
        self.conn.autocommit = True
        self.statements = 0

    def query(self, sql, params=None):
        with self.conn.cursor() as cur:
            self.statements += 1
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def failing(self, sql, params):
        """Run a statement expected to fail; return its SQLSTATE."""
        try:
            self.query(sql, params)
        except psycopg2.Error as e:
            return e.pgcode
        return None

    def close(self):
        self.conn.close()


def param(secret):
    """The value as a parameter: text, or a JSON document for jsonb."""
    if secret.get("json"):
        return psycopg2.extras.Json(secret["value"])
    return secret["value"]


def cast(secret):
    return "jsonb" if secret.get("json") else "text"


def read_all(app, secrets):
    values = {}
    for s in secrets:
        (value,) = app.query("SELECT secretenv.secret_get(%s)", (s["name"],))[0]
        values[s["name"]] = json.loads(value) if s.get("json") else value
    return values


def list_masked(app):
    return {
        name: {"masked": masked, "kek_version": version}
        for name, masked, version in app.query(
            "SELECT secret_name, masked_value, kek_version "
            "FROM secretenv.masked_secrets ORDER BY secret_name"
        )
    }


def store(spec):
    app = Client(os.environ["SECRETENV_APP_USER"])
    out = {"created": {}, "errors": {}}

    for s in spec["secrets"]:
        (secret_id,) = app.query(
            "SELECT secretenv.secret_create(%s, %s::" + cast(s) + ", %s, %s)",
            (s["name"], param(s), s.get("provider"), s.get("description")),
        )[0]
        out["created"][s["name"]] = secret_id

    # An unrelated statement, which the server log must keep verbatim.
    out["marker"] = app.query("SELECT 'harmless-marker-123'")[0][0]

    # Failing statements that carry a plaintext: a duplicate name, and a
    # malformed JSON document whose parser error would quote it.
    bad = spec["failing"]
    out["errors"]["duplicate"] = app.failing(
        "SELECT secretenv.secret_create(%s, %s::text)",
        (spec["secrets"][0]["name"], bad["duplicate_value"]),
    )
    out["errors"]["bad_json"] = app.failing(
        "SELECT secretenv.secret_create(%s, %s::jsonb)",
        (bad["bad_json_name"], bad["bad_json_text"]),
    )

    out["masked"] = list_masked(app)
    out["values"] = read_all(app, spec["secrets"])

    for u in spec["updates"]:
        app.query(
            "SELECT secretenv.secret_update(%s, %s::" + cast(u) + ")",
            (u["name"], param(u)),
        )
    out["masked_after_update"] = list_masked(app)
    latest = {s["name"]: s for s in spec["secrets"]}
    latest.update({u["name"]: u for u in spec["updates"]})
    out["values_after_update"] = read_all(app, list(latest.values()))

    out["statements"] = app.statements
    app.close()
    return out


def rotate(spec):
    admin = Client(os.environ["SECRETENV_ADMIN_USER"])
    app = Client(os.environ["SECRETENV_APP_USER"])
    out = {}

    out["status_before"] = admin.query("SELECT secretenv.status()")[0][0]
    out["rotated"] = admin.query("SELECT secretenv.secret_rotate_all()")[0][0]
    out["rotated_again"] = admin.query("SELECT secretenv.secret_rotate_all()")[0][0]
    out["verify_failures"] = admin.query(
        "SELECT count(*) FROM secretenv.verify_secrets()")[0][0]
    out["status_after"] = admin.query("SELECT secretenv.status()")[0][0]

    latest = {s["name"]: s for s in spec["secrets"]}
    latest.update({u["name"]: u for u in spec["updates"]})
    out["values"] = read_all(app, list(latest.values()))
    out["masked"] = list_masked(app)

    out["statements"] = admin.statements + app.statements
    admin.close()
    app.close()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("store", "rotate"):
        sys.stderr.write(__doc__)
        return 2
    with open(sys.argv[2], encoding="utf-8") as f:
        spec = json.load(f)
    result = store(spec) if sys.argv[1] == "store" else rotate(spec)
    json.dump(result, sys.stdout, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
