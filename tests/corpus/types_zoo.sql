-- corpus: types_zoo -- every built-in type family, with the values that trip copies up.
-- roles:
--
-- Numbers with NaN, +-Infinity and -0; money; dates and timestamps with +-infinity; intervals of every
-- shape; xml with a declaration and as a content fragment; json (duplicate keys, whitespace kept)
-- and jsonb; composite types and arrays of them; enum arrays; ranges and multiranges; bit and bit
-- varying; inet, cidr, macaddr, macaddr8; geometric types; text search types; uuid, pg_lsn, oid;
-- multi-dimensional arrays with NULLs; text with tabs, newlines, backslashes and non-ASCII letters;
-- non-default collations (C, an ICU collation, a nondeterministic ICU collation with an index); and
-- two values of several megabytes (text and bytea).

SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE SCHEMA zoo;

CREATE TYPE zoo.color AS ENUM ('red', 'green', 'blue', 'ultra violet');
CREATE TYPE zoo.money_amount AS (currency char(3), amount numeric(18, 4));
CREATE TYPE zoo.line_item AS (sku text, qty integer, price zoo.money_amount, colors zoo.color[]);
CREATE DOMAIN zoo.percent AS numeric(5, 2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE COLLATION zoo.german (provider = icu, locale = 'de-DE');
CREATE COLLATION zoo.case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TYPE zoo.float_range AS RANGE (subtype = float8, subtype_diff = float8mi);

CREATE TABLE zoo.numbers (
    id integer PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint,
    num numeric, num_scaled numeric(20, 6),
    f4 real, f8 double precision,
    cash money,
    pct zoo.percent,
    flag boolean
);
INSERT INTO zoo.numbers VALUES
    (1, -32768, -2147483648, -9223372036854775808, 'NaN', -0.000001, 'NaN', 'NaN', '-92233720368547758.08', 0, true),
    (2, 32767, 2147483647, 9223372036854775807, 'Infinity', 99999999999999.999999, 'Infinity', 'Infinity',
        '92233720368547758.07', 100, false),
    (3, 0, 0, 0, '-Infinity', 0, '-Infinity', '-Infinity', 0, 12.5, NULL),
    (4, 1, 1, 1, 3.14159265358979323846264338327950288419716939937510, 1.5, '-0', '-0', 1234.56, 99.99, true),
    (5, NULL, NULL, NULL, NULL, NULL, 1.17549435e-38, 2.2250738585072014e-308, NULL, NULL, NULL),
    (6, 7, 7, 7, 1e-300, 0.1, 0.1, 0.1, 0.01, 0.01, false);

CREATE TABLE zoo.times (
    id integer PRIMARY KEY,
    d date, ts timestamp, tstz timestamptz, t time, ttz timetz, iv interval, iv_fields interval day to second(3)
);
INSERT INTO zoo.times VALUES
    (1, 'infinity', 'infinity', 'infinity', '24:00:00', '23:59:59.999999+14', '178000000 years', '1 day 02:03:04.567'),
    (2, '-infinity', '-infinity', '-infinity', '00:00:00', '00:00:00-15:59', '-178000000 years', '-1 day'),
    (3, '4713-01-01 BC', '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '12:34:56.789012', '12:00+05:30',
        '1 year 2 mons 3 days 04:05:06.789', '00:00:00.001'),
    (4, '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', NULL, NULL,
        '-1 year -2 mons +3 days -04:05:06', NULL),
    (5, '2024-02-29', '2024-02-29 12:00', '2024-03-31 01:30:00+01', '01:02', '01:02:03-08', '0', '0'),
    (6, NULL, NULL, NULL, NULL, NULL, '1 mon -1 day 1 sec', '-00:00:00.5');

CREATE TABLE zoo.documents (
    id integer PRIMARY KEY,
    x xml,
    j json,
    jb jsonb
);
INSERT INTO zoo.documents VALUES
    (1, '<?xml version="1.0"?><doc><title>With a declaration</title></doc>', '{"a": 1, "a": 2}', '{"a": 1, "a": 2}'),
    (2, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><invoice no="7">Grüße &amp; more</invoice>',
        '  [1, 2.50, "three", null, true]  ', '[1, 2.50, "three", null, true]'),
    (3, 'a text fragment <b>with</b> markup', '"just a string"', '"just a string"'),
    (4, '<!-- a comment --><root xmlns:h="http://www.w3.org/TR/html4/"><h:td>Cell</h:td></root>',
        '{"nested": {"deep": [{"k": "v\u00e9"}]}, "big": 123456789012345678901234567890}',
        '{"nested": {"deep": [{"k": "v\u00e9"}]}, "big": 123456789012345678901234567890, "float": 1.0e2}'),
    (5, NULL, 'null', 'null'),
    (6, '<?xml version="1.0" encoding="ISO-8859-1"?><latin>caf&#233;</latin>', '{}', '{}');

CREATE TABLE zoo.structured (
    id integer PRIMARY KEY,
    item zoo.line_item,
    items zoo.line_item[],
    colors zoo.color[],
    matrix integer[][],
    words text[],
    amounts zoo.money_amount[]
);
INSERT INTO zoo.structured VALUES
    (1, ROW('SKU-1', 2, ROW('EUR', 9.99), '{red,"ultra violet"}')::zoo.line_item,
        ARRAY[ROW('a,b', 1, ROW('USD', 0.5), '{}')::zoo.line_item, ROW('q"uote', NULL, NULL, NULL)::zoo.line_item],
        '{blue,green,NULL}', '{{1,2,3},{4,NULL,6}}', ARRAY['with space', 'with,comma', 'with"quote', 'back\slash', NULL, ''],
        ARRAY[ROW('CHF', -1.2345)::zoo.money_amount]),
    (2, NULL, '{}', '{}', '{}', '{}', NULL),
    (3, ROW(NULL, NULL, NULL, NULL)::zoo.line_item, NULL, '{"ultra violet"}', '[0:1]={7,8}', ARRAY['NULL', 'null'], '{}');

CREATE TABLE zoo.ranges (
    id integer PRIMARY KEY,
    r4 int4range, r8 int8range, rn numrange, rts tsrange, rtz tstzrange, rd daterange, rf zoo.float_range,
    m4 int4multirange, mn nummultirange, md datemultirange
);
INSERT INTO zoo.ranges VALUES
    (1, '[1,10)', '(,)', '[1.5,2.5]', '[2024-01-01,infinity)', '(-infinity,2024-01-01 00:00+00]', '[2024-01-01,2024-12-31]',
        '[0.5,NaN)', '{[1,3),[5,8)}', '{[1.1,2.2],(3,)}', '{[2024-01-01,2024-02-01),[2024-03-01,)}'),
    (2, 'empty', 'empty', 'empty', 'empty', 'empty', 'empty', 'empty', '{}', '{}', '{}'),
    (3, NULL, '[-9223372036854775808,9223372036854775807)', '(,0)', NULL, NULL, '(,)', '(-Infinity,Infinity)',
        NULL, '{(,)}', NULL);

CREATE TABLE zoo.networks (
    id integer PRIMARY KEY,
    ip inet, net cidr, mac macaddr, mac8 macaddr8, bits bit(8), vbits bit varying(64), vbits_free varbit
);
INSERT INTO zoo.networks VALUES
    (1, '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', B'10101010', B'1', B''),
    (2, '::ffff:1.2.3.4', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', B'00000000',
        repeat('1', 64)::varbit, repeat('01', 500)::varbit),
    (3, '::1/128', '0.0.0.0/0', NULL, NULL, NULL, NULL, NULL);

CREATE TABLE zoo.shapes (
    id integer PRIMARY KEY,
    p point, l line, s lseg, b box, pa path, po polygon, c circle
);
INSERT INTO zoo.shapes VALUES
    (1, '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))', '<(0,0),1.5>'),
    (2, '(NaN,Infinity)', NULL, NULL, '(0,0),(0,0)', '((0,0),(1,1))', '((0,0))', '<(1e300,-1e-300),0>');

CREATE TABLE zoo.misc (
    id integer PRIMARY KEY,
    u uuid, lsn pg_lsn, o oid, tsv tsvector, tsq tsquery, ch "char", nm name, fixed char(5), var varchar(10),
    raw bytea, snap pg_snapshot
);
INSERT INTO zoo.misc VALUES
    (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '16/B374D848', 4294967295, 'a fat cat:1A sat:2B',
        'fat & (rat | ! cat)', 'x', 'a name', 'ab', 'ünïcødé',
        '\x00ff5c0a0d09', '10:20:10,14,15'),
    (2, '00000000-0000-0000-0000-000000000000', '0/0', 0, '', 'a:*', E'\\', repeat('n', 63), '', '', '\x', NULL),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

CREATE TABLE zoo.texts (
    id integer PRIMARY KEY,
    plain text,
    c_sorted text COLLATE "C",
    german text COLLATE zoo.german,
    ci_email text COLLATE zoo.case_insensitive
);
INSERT INTO zoo.texts VALUES
    (1, E'tab\there, newline\nthere, carriage\rreturn, backslash \\ end', 'Zebra', 'Straße', 'Alice@Example.COM'),
    (2, E'quote '' double " nul-less \u00e9\u4e2d\u6587 emoji \U0001F600', 'apple', 'Äpfel', 'bob@example.com'),
    (3, '\N', E'\\.', 'zürich', 'BOB2@example.com'),
    (4, '', '', '', ''),
    (5, NULL, NULL, NULL, NULL);
CREATE UNIQUE INDEX texts_ci_email ON zoo.texts (ci_email);
CREATE INDEX texts_german ON zoo.texts (german);

-- Two values of several megabytes each (kept to two rows: the suite must stay fast).
CREATE TABLE zoo.blobs (
    id integer PRIMARY KEY,
    kind text NOT NULL,
    big_text text,
    big_bytes bytea
);
INSERT INTO zoo.blobs
SELECT 1, 'text of about 8 MB', string_agg(md5(g::text), '' ORDER BY g), NULL FROM generate_series(1, 250000) AS g;
INSERT INTO zoo.blobs
SELECT 2, 'bytea of about 6 MB', NULL, decode(string_agg(md5(g::text), '' ORDER BY g), 'hex')
FROM generate_series(1, 375000) AS g;

-- Extension types: hstore at an old version (as pg_upgrade leaves it) in a schema of its own with a
-- quoted name, ltree 1.1 (before its binary form existed), seg (no binary form), and arrays of them.
CREATE SCHEMA "Ext Types";
CREATE EXTENSION hstore WITH SCHEMA "Ext Types" VERSION '1.4';
CREATE EXTENSION ltree VERSION '1.1';
CREATE EXTENSION seg;
CREATE TABLE zoo.extension_values (
    id integer PRIMARY KEY,
    attrs "Ext Types".hstore,
    attr_history "Ext Types".hstore[],
    path ltree,
    measured seg
);
CREATE INDEX extension_values_path ON zoo.extension_values USING gist (path);
INSERT INTO zoo.extension_values VALUES
    (1, 'a=>1, "b c"=>"d\"e", n=>NULL', ARRAY['x=>1'::"Ext Types".hstore, ''], 'Top.Science.Astronomy', '1.5 .. 2.5'),
    (2, '', '{}', 'Top', '<10'),
    (3, NULL, NULL, NULL, NULL);
