-- corpus: no_tables -- a database without a single table: a utility library of functions, types,
-- a sequence and views over no table, as an "API" database of stored procedures leaves it.
-- roles:

SET client_min_messages = warning;

CREATE SCHEMA util;
COMMENT ON SCHEMA util IS 'Helpers shared by the reporting jobs';

CREATE TYPE util.weekday AS ENUM ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun');
CREATE DOMAIN util.iso_country AS char(2) CHECK (VALUE ~ '^[A-Z]{2}$');
CREATE TYPE util.pair AS (key text, value text);

CREATE SEQUENCE util.ticket_numbers START 1000 INCREMENT 7 MAXVALUE 99999 CYCLE;
SELECT setval('util.ticket_numbers', 4242, true);
CREATE SEQUENCE util.never_used;

CREATE FUNCTION util.next_ticket() RETURNS text
    LANGUAGE sql
    AS $$ SELECT 'T-' || nextval('util.ticket_numbers') $$;

CREATE FUNCTION util.business_days(from_day date, to_day date) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT count(*)::integer FROM generate_series(from_day, to_day, interval '1 day') AS d
          WHERE extract(isodow FROM d) < 6 $$;

CREATE PROCEDURE util.noop(INOUT counter integer)
    LANGUAGE plpgsql
    AS $$ BEGIN counter := counter + 1; END $$;

CREATE VIEW util.calendar_2024 AS
    SELECT d::date AS day, extract(isodow FROM d)::integer AS dow
      FROM generate_series(date '2024-01-01', date '2024-12-31', interval '1 day') AS d;

CREATE MATERIALIZED VIEW util.month_starts AS
    SELECT date_trunc('month', d)::date AS month FROM generate_series(date '2024-01-01', date '2024-12-01',
        interval '1 month') AS d;
