-- corpus: erp_settings -- a legacy ERP whose unqualified names resolve through database settings.
-- roles: corpus_erp_clerk
--
-- ALTER DATABASE ... SET search_path including the application's schemas, one of them named with
-- quotes in its name ("abc", as in pgcopydb's own test suite); a per-role setting in the database
-- (ALTER ROLE ... IN DATABASE ... SET); a database-wide DateStyle of day-month-year (the legacy
-- client's), so the text form of dates differs from the server default, with the legacy client's other
-- settings (a time zone, extra_float_digits = 0, bytea_output = escape, IntervalStyle = sql_standard);
-- functions with a search_path of their own; column defaults that call the application's functions; a
-- foreign table; and, last, default_transaction_read_only = on: the old ERP was frozen read-only when
-- its replacement went live, and is migrated as it is.

SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE SCHEMA erp;
CREATE SCHEMA """abc""";

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET search_path TO "$user", public, erp, %I', current_database(), '"abc"');
    EXECUTE format('ALTER DATABASE %I SET DateStyle TO %L', current_database(), 'SQL, DMY');
    EXECUTE format('ALTER DATABASE %I SET statement_timeout TO %L', current_database(), '5min');
    EXECUTE format('ALTER DATABASE %I SET TimeZone TO %L', current_database(), 'Pacific/Chatham');
    EXECUTE format('ALTER DATABASE %I SET extra_float_digits TO 0', current_database());
    EXECUTE format('ALTER DATABASE %I SET bytea_output TO %L', current_database(), 'escape');
    EXECUTE format('ALTER DATABASE %I SET IntervalStyle TO %L', current_database(), 'sql_standard');
    EXECUTE format('ALTER ROLE corpus_erp_clerk IN DATABASE %I SET work_mem TO %L', current_database(), '8MB');
    EXECUTE format('ALTER ROLE corpus_erp_clerk IN DATABASE %I SET search_path TO erp, %I', current_database(), '"abc"');
END
$$;

CREATE TABLE """abc""".state (
    code char(2) PRIMARY KEY,
    name text NOT NULL
);

CREATE SEQUENCE erp.document_numbers;

CREATE FUNCTION erp.next_document_no() RETURNS text
    LANGUAGE sql
    SET search_path = erp, pg_catalog
    AS $$ SELECT 'D' || lpad(nextval('document_numbers')::text, 8, '0') $$;

CREATE TABLE erp.customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    state_code char(2) REFERENCES """abc""".state (code),
    customer_since date NOT NULL,
    credit_limit numeric(12, 2) DEFAULT 1000
);

CREATE TABLE erp.documents (
    document_no text PRIMARY KEY DEFAULT erp.next_document_no(),
    customer_id integer NOT NULL REFERENCES erp.customers (id),
    issued date NOT NULL,
    due date,
    booked_at timestamp NOT NULL,
    amount numeric(14, 2) NOT NULL,
    exchange_rate double precision,
    payment_terms interval,
    signed_at timestamptz,
    scan bytea
);

INSERT INTO """abc""".state VALUES ('NY', 'New York'), ('CA', 'California'), ('TX', 'Texas'), ('WA', 'Washington');
INSERT INTO erp.customers (name, state_code, customer_since, credit_limit)
SELECT 'Customer ' || g, (ARRAY['NY', 'CA', 'TX', 'WA', NULL])[g % 5 + 1], date '1999-01-13' + g * 17,
       CASE WHEN g % 4 = 0 THEN NULL ELSE g * 250 END
FROM generate_series(1, 60) AS g;
-- Days above 12: read as month-first by a client under the server's default DateStyle, they fail.
INSERT INTO erp.documents (customer_id, issued, due, booked_at, amount)
SELECT g % 60 + 1, date '2024-01-13' + g, date '2024-01-13' + g + 30, timestamp '2024-01-13 08:30' + g * interval '1 day 3 hours',
       g * 19.95
FROM generate_series(1, 250) AS g;
-- Values whose text form the legacy settings would shorten or reshape.
UPDATE erp.documents SET exchange_rate = 1.0 / (customer_id + 2), payment_terms = make_interval(0, customer_id % 3, 0, 30,
       customer_id % 5, 0, 0.25), signed_at = booked_at AT TIME ZONE 'Europe/Berlin',
       scan = decode(md5(document_no) || '005c27', 'hex')
 WHERE customer_id % 2 = 0;

CREATE VIEW erp.open_documents AS
    SELECT d.document_no, c.name AS customer, s.name AS state, d.due
      FROM erp.documents d JOIN erp.customers c ON c.id = d.customer_id
      LEFT JOIN """abc""".state s ON s.code = c.state_code
     WHERE d.due >= date '2024-06-01';

-- A foreign table (the old system, read through postgres_fdw; unreachable from here, as after a
-- decommissioning: its rows are not the database's to copy).
CREATE SCHEMA legacy;
CREATE EXTENSION postgres_fdw WITH SCHEMA legacy;
CREATE SERVER old_erp FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'old_erp');
CREATE FOREIGN TABLE legacy.old_documents (document_no text, amount numeric) SERVER old_erp
    OPTIONS (schema_name 'public', table_name 'documents');
CREATE VIEW erp.all_documents AS
    SELECT document_no, amount FROM erp.documents UNION ALL SELECT document_no, amount FROM legacy.old_documents;

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only TO on', current_database());
END
$$;
