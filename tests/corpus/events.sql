-- corpus: events -- an analytics / event-tracking database (no GIS).
-- roles:
--
-- Classic inheritance (the old partitioning: children with CHECK ranges and a routing trigger, one
-- child with a column of its own, a plain SELECT on the parent returns the children's rows too);
-- declarative partitions (range, a default partition, a sub-partitioned partition, a partition in
-- another schema); UNLOGGED tables (a session cache); empty tables; zero-column tables (one with
-- rows, one without); a table with dropped columns; BRIN, partial and expression indexes.

SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE SCHEMA analytics;
CREATE SCHEMA "Raw";
CREATE SCHEMA archive;

-- Old-style partitioning by inheritance.
CREATE TABLE analytics.events (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    name text NOT NULL,
    user_id bigint,
    props jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE analytics.events_2023 (
    CHECK (occurred_at >= '2023-01-01' AND occurred_at < '2024-01-01')
) INHERITS (analytics.events);
CREATE TABLE analytics.events_2024 (
    CHECK (occurred_at >= '2024-01-01' AND occurred_at < '2025-01-01'),
    ingest_batch integer
) INHERITS (analytics.events);
ALTER TABLE analytics.events_2023 ADD PRIMARY KEY (id);
ALTER TABLE analytics.events_2024 ADD PRIMARY KEY (id);
CREATE INDEX events_2024_name ON analytics.events_2024 (name, occurred_at);

CREATE FUNCTION analytics.route_event() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.occurred_at >= '2024-01-01' THEN
        INSERT INTO analytics.events_2024 (id, occurred_at, name, user_id, props)
        VALUES (NEW.id, NEW.occurred_at, NEW.name, NEW.user_id, NEW.props);
    ELSE
        INSERT INTO analytics.events_2023 VALUES (NEW.*);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER route_event BEFORE INSERT ON analytics.events
    FOR EACH ROW EXECUTE FUNCTION analytics.route_event();

INSERT INTO analytics.events (occurred_at, name, user_id, props)
SELECT timestamptz '2023-10-01' + g * interval '37 minutes', (ARRAY['page_view', 'signup', 'click', 'purchase'])[g % 4 + 1],
       CASE WHEN g % 5 <> 0 THEN g % 97 END, jsonb_build_object('n', g, 'ref', CASE WHEN g % 3 = 0 THEN 'ad' END)
FROM generate_series(1, 9000) AS g;
UPDATE analytics.events_2024 SET ingest_batch = id % 10 WHERE id % 4 = 0;
-- Rows written into the parent itself before the routing trigger existed (ALTER TABLE ... DISABLE
-- TRIGGER while importing).
ALTER TABLE analytics.events DISABLE TRIGGER route_event;
INSERT INTO analytics.events (occurred_at, name, user_id) VALUES
    ('2022-12-31 23:59:59', 'legacy_import', NULL), ('2022-12-30 00:00:00', 'legacy_import', 7);
ALTER TABLE analytics.events ENABLE TRIGGER route_event;

-- Declarative partitioning.
CREATE TABLE analytics.page_views (
    viewed_at timestamptz NOT NULL,
    path text NOT NULL,
    visitor uuid NOT NULL,
    duration_ms integer,
    PRIMARY KEY (visitor, viewed_at)
) PARTITION BY RANGE (viewed_at);
CREATE TABLE analytics.page_views_2024_01 PARTITION OF analytics.page_views
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE archive.page_views_2023 PARTITION OF analytics.page_views
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE analytics.page_views_2024_02 PARTITION OF analytics.page_views
    FOR VALUES FROM ('2024-02-01') TO ('2024-03-01') PARTITION BY HASH (visitor);
CREATE TABLE analytics.page_views_2024_02_h0 PARTITION OF analytics.page_views_2024_02
    FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE analytics.page_views_2024_02_h1 PARTITION OF analytics.page_views_2024_02
    FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE analytics.page_views_default PARTITION OF analytics.page_views DEFAULT;
CREATE INDEX page_views_path ON analytics.page_views (path);
CREATE INDEX page_views_brin ON analytics.page_views USING brin (viewed_at);

INSERT INTO analytics.page_views
SELECT timestamptz '2023-12-20' + g * interval '11 minutes', '/page/' || (g % 40),
       md5('visitor' || (g % 300))::uuid, CASE WHEN g % 6 <> 0 THEN g % 5000 END
FROM generate_series(1, 12000) AS g;

-- UNLOGGED: the session cache (lost on a crash, by design).
CREATE UNLOGGED TABLE analytics.session_cache (
    session_id uuid PRIMARY KEY,
    payload jsonb NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX session_cache_expiry ON analytics.session_cache (expires_at);
INSERT INTO analytics.session_cache
SELECT md5('session' || g)::uuid, jsonb_build_object('cart', g % 9), timestamptz '2030-01-01' + g * interval '1 s'
FROM generate_series(1, 500) AS g;
CREATE UNLOGGED TABLE "Raw".rate_limits (client text PRIMARY KEY, hits integer NOT NULL);

-- Empty tables.
CREATE TABLE "Raw".imports (
    id bigserial PRIMARY KEY,
    source_file text NOT NULL,
    loaded_at timestamptz
);
CREATE TABLE analytics.dead_letters (payload bytea, error text);

-- Zero-column tables: a heartbeat log (only the number of rows matters) and an empty marker.
CREATE TABLE analytics.heartbeat ();
INSERT INTO analytics.heartbeat SELECT FROM generate_series(1, 7);
CREATE TABLE "Raw"."Marker" ();

-- Dropped columns and a rewritten column order.
CREATE TABLE analytics.daily_rollup (
    day date PRIMARY KEY,
    obsolete text,
    visitors integer NOT NULL,
    legacy_flag boolean,
    bounce_rate real
);
INSERT INTO analytics.daily_rollup
SELECT date '2024-01-01' + g, 'x', g * 13, g % 2 = 0, (g % 100) / 100.0 FROM generate_series(0, 90) AS g;
ALTER TABLE analytics.daily_rollup DROP COLUMN obsolete;
ALTER TABLE analytics.daily_rollup DROP COLUMN legacy_flag;
ALTER TABLE analytics.daily_rollup ADD COLUMN computed_at timestamptz DEFAULT '2024-04-01 00:00+00';
CREATE INDEX daily_rollup_busy ON analytics.daily_rollup (visitors) WHERE visitors > 500;
CREATE INDEX events_name_lower ON analytics.events (lower(name));

CREATE VIEW analytics.events_per_day AS
    SELECT date_trunc('day', occurred_at) AS day, name, count(*) AS n FROM analytics.events GROUP BY 1, 2;

-- Aggregates, statistics, storage parameters, replica identity, rules and trigger states.
CREATE FUNCTION analytics.p95_final(samples double precision[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY v) FROM unnest(samples) AS v $$;
CREATE AGGREGATE analytics.p95(double precision) (
    SFUNC = array_append, STYPE = double precision[], FINALFUNC = analytics.p95_final, INITCOND = '{}'
);
CREATE STATISTICS analytics.page_views_path_visitor (ndistinct, dependencies)
    ON path, visitor FROM analytics.page_views_2024_01;
ALTER TABLE analytics.daily_rollup SET (fillfactor = 70, autovacuum_enabled = false);
ALTER TABLE analytics.daily_rollup ALTER COLUMN bounce_rate SET STATISTICS 500;
ALTER TABLE analytics.events_2023 REPLICA IDENTITY FULL;
ALTER TABLE analytics.daily_rollup CLUSTER ON daily_rollup_pkey;

CREATE TABLE analytics.event_archive_requests (id serial PRIMARY KEY, day date NOT NULL, note text);
CREATE RULE archive_requests_no_delete AS ON DELETE TO analytics.event_archive_requests DO INSTEAD NOTHING;
INSERT INTO analytics.event_archive_requests (day, note) VALUES ('2024-01-01', 'q1'), ('2024-04-01', NULL);

CREATE FUNCTION analytics.touch_rollup() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN NEW.computed_at := '2000-01-01 00:00+00'; RETURN NEW; END $$;
CREATE TRIGGER rollup_touch BEFORE INSERT OR UPDATE ON analytics.daily_rollup
    FOR EACH ROW EXECUTE FUNCTION analytics.touch_rollup();
ALTER TABLE analytics.daily_rollup DISABLE TRIGGER rollup_touch;
CREATE TRIGGER rollup_touch_replica BEFORE UPDATE ON analytics.daily_rollup
    FOR EACH ROW EXECUTE FUNCTION analytics.touch_rollup();
ALTER TABLE analytics.daily_rollup ENABLE REPLICA TRIGGER rollup_touch_replica;

-- A foreign key to a partitioned table, and a materialized view built on another one.
CREATE TABLE analytics.visitors (visitor uuid PRIMARY KEY, first_seen timestamptz NOT NULL);
INSERT INTO analytics.visitors SELECT DISTINCT visitor, min(viewed_at) OVER (PARTITION BY visitor)
    FROM analytics.page_views;
CREATE TABLE analytics.visitor_notes (
    visitor uuid NOT NULL,
    viewed_at timestamptz NOT NULL,
    note text,
    FOREIGN KEY (visitor, viewed_at) REFERENCES analytics.page_views (visitor, viewed_at)
);
INSERT INTO analytics.visitor_notes SELECT visitor, viewed_at, 'long visit' FROM analytics.page_views
    WHERE duration_ms > 4900;
CREATE MATERIALIZED VIEW analytics.daily_paths AS
    SELECT date_trunc('day', viewed_at) AS day, path, count(*) AS views FROM analytics.page_views GROUP BY 1, 2;
CREATE MATERIALIZED VIEW analytics.top_paths AS
    SELECT path, sum(views) AS views FROM analytics.daily_paths GROUP BY path ORDER BY 2 DESC LIMIT 10;

-- A wide survey-answers table (400 columns), names at the 63-byte limit (multi-byte letters among
-- them), and a domain tightened later with NOT VALID over rows that violate it.
DO $$
BEGIN
    EXECUTE 'CREATE TABLE analytics.survey_answers (response_id integer PRIMARY KEY, '
        || (SELECT string_agg(format('q%s %s', g, CASE g % 4 WHEN 0 THEN 'smallint' WHEN 1 THEN 'text'
                                                   WHEN 2 THEN 'boolean' ELSE 'numeric(5, 1)' END), ', ')
              FROM generate_series(1, 399) AS g) || ')';
    EXECUTE 'INSERT INTO analytics.survey_answers SELECT r, '
        || (SELECT string_agg(CASE g % 4 WHEN 0 THEN format('(r * %s) %% 5', g) WHEN 1 THEN format('''a'' || r || ''-%s''', g)
                                 WHEN 2 THEN format('(r + %s) %% 3 = 0', g) ELSE format('(r * %s) %% 100 / 10.0', g) END, ', ')
              FROM generate_series(1, 399) AS g) || ' FROM generate_series(1, 40) AS r';
END
$$;
CREATE TABLE analytics."événements_agrégés_par_catégorie_et_par_période_de_tem" (
    "identifiant_de_la_catégorie_principale_de_l_événement_agrégé_x" integer PRIMARY KEY,
    total bigint NOT NULL
);
INSERT INTO analytics."événements_agrégés_par_catégorie_et_par_période_de_tem" VALUES (1, 10), (2, 20);
CREATE DOMAIN analytics.event_name AS text;
CREATE TABLE analytics.custom_events (id serial PRIMARY KEY, name analytics.event_name NOT NULL);
INSERT INTO analytics.custom_events (name) VALUES ('signup'), ('Legacy Event With Spaces'), ('checkout');
ALTER DOMAIN analytics.event_name ADD CONSTRAINT event_name_snake_case CHECK (VALUE ~ '^[a-z_]+$') NOT VALID;
CREATE UNLOGGED SEQUENCE analytics.cache_tickets START 500;
SELECT setval('analytics.cache_tickets', 777);
