"""Validation digests every built-in type family by what COPY transfers (issue 14).

One table per family (its values, an array of them, NULLs): the copy engine copies them; the validator
must pass, with source and target databases whose own settings render values and definitions
differently (search_path, TimeZone, extra_float_digits, IntervalStyle, DateStyle, bytea_output); and a
one-value change on the target in each family must fail the content check naming that table and row.
"""

import uuid

import pytest

from conftest import ScratchDatabases, connect, execute
from pgmigrate.clone import copier
from pgmigrate.validation.validate import validate

MY_CHECKS = ("schema", "row_counts", "content", "orphans", "sequences")

PRELUDE = """
CREATE SCHEMA types;
CREATE TYPE types.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE types.pair AS (label text, at timestamptz, ratio float8, amount numeric, during interval);
CREATE TYPE types.floatrange AS RANGE (subtype = float8);
CREATE COLLATION types.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE DOMAIN types.percent AS numeric(5, 2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE DOMAIN types.scores AS integer[] CHECK (cardinality(VALUE) < 10);
CREATE DOMAIN types.label AS text COLLATE types.ci;
CREATE SEQUENCE types.ticket_seq;
CREATE FUNCTION types.is_positive(numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
"""

# table: (columns, rows, the one-value change made on the target to row 1)
FAMILIES = {
    "xml": ("v xml, va xml[]",
            ["('<?xml version=\"1.0\"?><doc a=\"1\">text</doc>', ARRAY['<?xml version=\"1.0\"?><x/>'::xml])",
             "('<?xml version=\"1.0\" standalone=\"yes\"?><doc/>', NULL)",
             "('some <b>content</b> fragment', '{}')", "(NULL, ARRAY[NULL::xml])"],
            "UPDATE types.xml SET v = '<doc a=\"1\">text!</doc>' WHERE id = 1"),
    "json": ("v json, va json[]",
             ["('{\"a\": 1,  \"a\": 2, \"n\": 1.0}', ARRAY['[1, 2]'::json])", "(' [ ] ', NULL)", "('null', '{}')"],
             "UPDATE types.json SET v = '{\"a\": 1, \"a\": 2, \"n\": 1.0}' WHERE id = 1"),
    "jsonb": ("v jsonb, va jsonb[]",
              ["('{\"n\": 1.0, \"s\": \"é\", \"l\": [1, {\"k\": null}]}', ARRAY['{}'::jsonb])",
               "('1e400', NULL)", "('\"text\"', '{}')"],
              "UPDATE types.jsonb SET v = '{\"n\": 1.00, \"s\": \"é\", \"l\": [1, {\"k\": null}]}' "
              "WHERE id = 1"),
    "composite": ("v types.pair, va types.pair[]",
                  ["(ROW('a', '2024-03-01 12:00:00.123456+00', 0.1, 1.50, '1 day')::types.pair, "
                   "ARRAY[ROW(NULL, 'infinity', 'NaN', 'NaN', '-1 mon')::types.pair])",
                   "(ROW(NULL, NULL, NULL, NULL, NULL)::types.pair, NULL)", "(NULL, '{}')"],
                  "UPDATE types.composite SET v.at = (v).at + interval '1 microsecond' WHERE id = 1"),
    "enums": ("v types.mood, va types.mood[]",
              ["('happy', '{sad,happy}')", "('sad', '{}')", "(NULL, '{NULL,ok}')"],
              "UPDATE types.enums SET va = '{happy,sad}' WHERE id = 1"),
    "ranges": ("r int4range, n numrange, t tstzrange, f types.floatrange, m datemultirange, mi int4multirange, "
               "ra int4range[]",
               ["('[1,5)', '(1.0,2.50]', '[2024-01-01,infinity)', '[0.1,0.2]', '{[2024-01-01,2024-02-01)}', "
                "'{[1,3), [7,9)}', '{\"[1,2)\",empty}')",
                "('empty', '(,)', 'empty', 'empty', '{}', '{}', '{}')", "(NULL, NULL, NULL, NULL, NULL, NULL, NULL)"],
               "UPDATE types.ranges SET n = '(1.0,2.5]' WHERE id = 1"),
    "money": ("v money, va money[]",
              ["('1234.56', '{0.01,-0.01}')", "('-92233720368547758.08', NULL)", "('0', '{}')"],
              "UPDATE types.money SET v = v + '0.01'::money WHERE id = 1"),
    "bits": ("v bit varying, b bit(8), va bit varying[]",
             ["(B'101', B'00001111', '{1,0101}')", "(B'', B'11111111', '{}')", "(NULL, NULL, NULL)"],
             "UPDATE types.bits SET v = B'1010' WHERE id = 1"),
    "network": ("i inet, c cidr, m macaddr, m8 macaddr8, ia inet[]",
                ["('10.0.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '{::1,10.1.2.3/24}')",
                 "('::ffff:1.2.3.4/128', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:00', '{}')",
                 "(NULL, NULL, NULL, NULL, NULL)"],
                "UPDATE types.network SET i = '10.0.0.1/31' WHERE id = 1"),
    "intervals": ("v interval, va interval[]",
                  ["('1 day', '{24:00:00,\"1 mon\"}')", "('-1 mon 2 days 03:04:05.678901', NULL)",
                   "('177999999 years', '{}')"],
                  "UPDATE types.intervals SET v = '24 hours' WHERE id = 1"),
    "numbers": ("n numeric, f8 float8, f4 float4, na numeric[], fa float8[]",
                ["(1.0, 0.1, 0.1, '{NaN,Infinity,-Infinity,1.00}', '{NaN,Infinity,-Infinity,-0,5e-324}')",
                 "('NaN', 'NaN', 'NaN', NULL, NULL)", "('Infinity', 'Infinity', '-Infinity', '{}', '{}')",
                 "('-0.000', '-0', 1e-45, NULL, '{1.7976931348623157e308}')"],
                "UPDATE types.numbers SET f8 = 0.30000000000000004 - 0.2 WHERE id = 1"),
    "numeric_scale": ("n numeric",
                      ["(1.0)", "('-Infinity')"],
                      "UPDATE types.numeric_scale SET n = 1.00 WHERE id = 1"),
    "times": ("ts timestamp, tz timestamptz, d date, t time, ttz timetz, tza timestamptz[]",
              ["('2024-03-01 12:00:00.123456', '2024-03-01 12:00:00.123456+05:30', '2024-03-01', '23:59:59.999999', "
               "'12:00+05:30', '{infinity,-infinity,\"2000-01-01 00:00+00\"}')",
               "('infinity', '-infinity', 'infinity', '00:00', '00:00-14', NULL)",
               "('-infinity', 'infinity', '-infinity', '24:00', '24:00+14', '{}')"],
              "UPDATE types.times SET tz = tz + interval '1 microsecond' WHERE id = 1"),
    "collations": ("ci text COLLATE types.ci, c text COLLATE \"C\", v varchar(20) COLLATE types.ci, l types.label, "
                   "cia text[] COLLATE types.ci",
                   ["('abc', 'abc', 'Straße', 'MiXeD', '{abc,DEF}')", "('', '', '', '', '{}')",
                    "(NULL, NULL, NULL, NULL, NULL)"],
                   "UPDATE types.collations SET ci = 'ABC' WHERE id = 1"),
    "characters": ("b bpchar, c char(4), vc varchar, t text, \"char\" \"char\", nm name",
                   ["('a', 'ab', 'x ', 'y', 'q', 'n')", "('', '', '', '', '', '')",
                    "(NULL, NULL, NULL, NULL, NULL, NULL)"],
                   "UPDATE types.characters SET b = 'a ' WHERE id = 1"),
    "bytes": ("v bytea, va bytea[]",
               ["('\\x00ff10', ARRAY['\\x00'::bytea])", "('', '{}')", "(NULL, NULL)"],
               "UPDATE types.bytes SET v = '\\x00ff11' WHERE id = 1"),
    "text_search": ("v tsvector, q tsquery, va tsvector[]",
                    ["(to_tsvector('simple', 'the quick brown fox'), 'quick & !fox', ARRAY['a:1 b:2'::tsvector])",
                     "('', NULL, '{}')"],
                    "UPDATE types.text_search SET v = to_tsvector('simple', 'the quick brown fix') WHERE id = 1"),
    "geometry": ("p point, l line, s lseg, b box, pa path, pg polygon, c circle, pta point[]",
                 ["('(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', "
                  "'((0,0),(1,1),(2,0))', '<(0,0),1.5>', ARRAY['(0.1,0.2)'::point])",
                  "('(NaN,Infinity)', NULL, NULL, NULL, '((0,0),(1,1))', NULL, NULL, '{}')"],
                 "UPDATE types.geometry SET p = '(1,2.0000000000000004)' WHERE id = 1"),
    "arrays": ("i int[], t text[], u uuid[], b boolean[], d date[]",
               ["('{1,2}', '{a,NULL,\"\"}', '{00000000-0000-0000-0000-000000000001}', '{t,f}', '{2024-01-01}')",
                "('{{1,2},{3,4}}', '[0:1]={x,y}', '{}', '{NULL}', '{infinity}')", "(NULL, NULL, NULL, NULL, NULL)"],
               "UPDATE types.arrays SET i = '[0:1]={1,2}' WHERE id = 1"),
    "domains": ("p types.percent, s types.scores, l types.label, pa types.percent[]",
                ["(12.50, '{1,2,3}', 'Label', '{1.00,2.5}')", "(0, '{}', '', '{}')", "(NULL, NULL, NULL, NULL)"],
                "UPDATE types.domains SET s = '{1,2,4}' WHERE id = 1"),
    "misc": ("u uuid, o oid, rc regclass, pl pg_lsn, h int8, tid tid, flag boolean",
             ["('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 4294967295, 'types.xml', '16/B374D848', -9223372036854775808, "
              "'(1,2)', true)", "(NULL, 0, 'pg_catalog.pg_class', '0/0', 0, '(0,0)', false)"],
             "UPDATE types.misc SET rc = 'types.json' WHERE id = 1"),
}

# Objects whose rendered definitions depend on search_path: the source database's own search_path
# names schema types, the target's does not (the setting itself is another check's concern).
SEARCH_PATH_OBJECTS = """
CREATE TABLE types.tickets (
    id bigint PRIMARY KEY DEFAULT nextval('types.ticket_seq'),
    mood types.mood NOT NULL DEFAULT 'ok'::types.mood,
    amount numeric CHECK (types.is_positive(amount)),
    xml_id int REFERENCES types.xml (id)
);
INSERT INTO types.tickets (amount, xml_id) VALUES (1, 1), (2.5, 2);
CREATE INDEX tickets_mood_idx ON types.tickets (mood) WHERE mood <> 'sad'::types.mood;
CREATE VIEW types.happy_tickets AS SELECT id, amount FROM types.tickets WHERE mood = 'happy';
"""

# Session defaults that change how values and definitions are rendered, set on each database itself.
SOURCE_SETTINGS = ["search_path = types, public", "extra_float_digits = 1"]
TARGET_SETTINGS = ["search_path = public", "extra_float_digits = 0", "TimeZone = 'America/New_York'",
                   "IntervalStyle = iso_8601", "DateStyle = 'SQL, DMY'", "bytea_output = escape"]


def family_sql():
    statements = [PRELUDE]
    for table, (columns, rows, _change) in FAMILIES.items():
        statements.append(f"CREATE TABLE types.{table} (id serial PRIMARY KEY, {columns});")
        column_names = ", ".join(c.strip().split(" ")[0] for c in _split_columns(columns))
        statements.append(f"INSERT INTO types.{table} ({column_names}) VALUES {', '.join(rows)};")
    statements.append(SEARCH_PATH_OBJECTS)
    return "\n".join(statements)


def _split_columns(columns):
    """Column definitions split on the commas between them (not those inside parentheses)."""
    parts, depth, current = [], 0, ""
    for char in columns:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def set_database(server, dbname, settings):
    execute(server, *(f'ALTER DATABASE "{dbname}" SET {setting}' for setting in settings))


@pytest.fixture(scope="module")
def copied(source_server, target_server, tmp_path_factory):
    """Every type family in a source database, copied by the engine; each database then given session
    defaults that render values and definitions differently."""
    databases = ScratchDatabases()
    src = databases.create(source_server, "tsrc")
    dst = databases.create(target_server, "tdst")
    execute(src, family_sql())
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path_factory.mktemp("artifacts")), workers=2)
    assert summary["status"] == "complete"
    set_database(source_server, src["dbname"], SOURCE_SETTINGS)
    set_database(target_server, dst["dbname"], TARGET_SETTINGS)
    yield src, dst
    databases.drop_all()


def mine(result):
    return {c["name"]: c for c in result["checks"] if c["name"] in MY_CHECKS}


def test_every_type_family_copied_by_the_engine_validates(copied):
    src, dst = copied
    checks = mine(validate(src, dst))
    failing = {name: (c["summary"], [i["detail"] for i in c["items"] if i["status"] == "fail"])
               for name, c in checks.items() if c["status"] == "fail"}
    assert failing == {}
    digested = {i["table"] for i in checks["content"]["items"] if i["status"] == "pass"}
    assert {f"types.{table}" for table in FAMILIES} <= digested


@pytest.fixture
def changed_target(copied, target_server):
    """A copy of the copied target (CREATE DATABASE ... TEMPLATE) with one value changed per family."""
    src, dst = copied
    name = f"tchg_{uuid.uuid4().hex[:10]}"
    execute(target_server, f'CREATE DATABASE "{name}" TEMPLATE "{dst["dbname"]}"')
    changed = {**dst, "dbname": name}
    set_database(target_server, name, TARGET_SETTINGS)
    conn = connect(changed)
    with conn, conn.cursor() as cur:
        for _columns, _rows, change in FAMILIES.values():
            cur.execute(change)
            assert cur.rowcount == 1, change
    conn.close()
    yield src, changed
    execute(target_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_one_value_change_in_each_family_fails_naming_its_table_and_row(changed_target):
    src, dst = changed_target
    checks = mine(validate(src, dst))
    content = {i["table"]: i for i in checks["content"]["items"] if i["status"] == "fail"}
    assert set(content) == {f"types.{table}" for table in FAMILIES}, checks["content"]["summary"]
    for table, item in content.items():
        assert item["changed"] == [["1"]] and item["missing_count"] == item["extra_count"] == 0, (table, item)
    assert checks["row_counts"]["status"] == "pass"
    assert checks["schema"]["status"] == "pass", checks["schema"]["summary"]
