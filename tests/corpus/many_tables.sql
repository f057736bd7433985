-- corpus: many_tables -- a schema-per-tenant application: 100 tenant schemas of 30 small tables each
-- (3,000 tables, 2,400 sequences, foreign keys inside each schema), a few rows per table.
-- roles:

SET client_min_messages = warning;

CREATE TABLE public.tenants (schema_name text PRIMARY KEY, created date NOT NULL);

CREATE PROCEDURE public.corpus_create_tenant(tenant integer)
    LANGUAGE plpgsql
    AS $$
DECLARE
    s text := format('tenant_%s', lpad(tenant::text, 3, '0'));
    names text[] := ARRAY['users', 'roles', 'projects', 'tasks', 'comments', 'attachments', 'labels',
        'milestones', 'teams', 'invitations', 'webhooks', 'api_keys', 'audit_log', 'settings', 'notifications',
        'reports', 'dashboards', 'widgets', 'exports', 'imports', 'tags', 'custom_fields', 'field_values',
        'time_entries', 'invoices', 'payments', 'plans', 'coupons', 'feedback', 'sessions'];
    t text;
    i integer := 0;
BEGIN
    EXECUTE format('CREATE SCHEMA %I', s);
    FOREACH t IN ARRAY names LOOP
        i := i + 1;
        IF t IN ('users', 'projects', 'tasks') OR i % 5 <> 0 THEN
            EXECUTE format('CREATE TABLE %I.%I (id serial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL'
                           ' DEFAULT %L, data jsonb)', s, t, '2024-01-01 00:00+00');
        ELSE
            EXECUTE format('CREATE TABLE %I.%I (id integer PRIMARY KEY, name text NOT NULL, value numeric)', s, t);
        END IF;
        IF t IN ('tasks', 'attachments') THEN
            EXECUTE format('ALTER TABLE %I.%I ADD COLUMN project_id integer REFERENCES %I.projects (id)', s, t, s);
        ELSIF t IN ('comments', 'time_entries') THEN
            EXECUTE format('ALTER TABLE %I.%I ADD COLUMN task_id integer REFERENCES %I.tasks (id)', s, t, s);
        ELSIF t IN ('sessions', 'api_keys', 'invitations') THEN
            EXECUTE format('ALTER TABLE %I.%I ADD COLUMN user_id integer REFERENCES %I.users (id)', s, t, s);
        END IF;
        IF (tenant + i) % 7 <> 0 THEN
            EXECUTE format('INSERT INTO %I.%I (id, name) SELECT g, %L || g FROM generate_series(1, %s) AS g',
                           s, t, t || ' ', (tenant + i) % 3 + 1);
        END IF;
    END LOOP;
    INSERT INTO public.tenants VALUES (s, date '2020-01-01' + tenant);
END
$$;

DO $$
BEGIN
    FOR tenant IN 1..100 LOOP
        CALL public.corpus_create_tenant(tenant);
        COMMIT;
    END LOOP;
END
$$;
DROP PROCEDURE public.corpus_create_tenant(integer);
