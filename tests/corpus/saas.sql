-- corpus: saas -- a multi-tenant SaaS application, migrated with owners and privileges kept
-- (migration_no_owner: false, migration_no_privileges: false).
-- roles: corpus_saas_owner corpus_saas_app corpus_saas_readonly corpus_saas_support
--
-- Every object belongs to the application's owner role, not to the login that migrates; row-level
-- security ENABLEd and FORCEd on the tenant tables (the owner itself sees only its tenant's rows);
-- column-level grants (support staff may read some columns of users, the app may update one);
-- default privileges (tables a migration creates later are readable by the read-only role, sequences
-- usable by the app, functions not executable by PUBLIC); a SECURITY DEFINER function with its own
-- search_path; large objects owned by the owner role with grants (tenants' file uploads).

SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE SCHEMA tenancy AUTHORIZATION corpus_saas_owner;
CREATE SCHEMA billing AUTHORIZATION corpus_saas_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy, billing TO corpus_saas_app, corpus_saas_readonly;
GRANT USAGE ON SCHEMA tenancy TO corpus_saas_support;

ALTER DEFAULT PRIVILEGES FOR ROLE corpus_saas_owner IN SCHEMA tenancy
    GRANT SELECT ON TABLES TO corpus_saas_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE corpus_saas_owner IN SCHEMA tenancy, billing
    GRANT USAGE, SELECT ON SEQUENCES TO corpus_saas_app;
ALTER DEFAULT PRIVILEGES FOR ROLE corpus_saas_owner
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE corpus_saas_owner
    GRANT EXECUTE ON FUNCTIONS TO corpus_saas_app;

SET ROLE corpus_saas_owner;

CREATE TABLE tenancy.tenants (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    plan text NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL
);

CREATE TABLE tenancy.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES tenancy.tenants (id),
    email text NOT NULL,
    display_name text,
    password_hash text NOT NULL,
    mfa_secret text,
    UNIQUE (tenant_id, email)
);

CREATE TABLE tenancy.projects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES tenancy.tenants (id),
    owner_id bigint NOT NULL REFERENCES tenancy.users (id),
    name text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE tenancy.files (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES tenancy.tenants (id),
    project_id bigint REFERENCES tenancy.projects (id) ON DELETE SET NULL,
    file_name text NOT NULL,
    blob oid NOT NULL
);

CREATE TABLE billing.subscriptions (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL UNIQUE REFERENCES tenancy.tenants (id),
    seats integer NOT NULL CHECK (seats > 0),
    renews_on date NOT NULL
);

CREATE FUNCTION tenancy.current_tenant() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::bigint $$;

CREATE FUNCTION tenancy.tenant_user_count(tenant bigint) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy
    AS $$ SELECT count(*) FROM users WHERE tenant_id = tenant $$;

ALTER TABLE tenancy.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.users FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.projects FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.files ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.files FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenancy.users
    USING (tenant_id = tenancy.current_tenant());
CREATE POLICY tenant_isolation ON tenancy.projects
    USING (tenant_id = tenancy.current_tenant())
    WITH CHECK (tenant_id = tenancy.current_tenant());
CREATE POLICY tenant_read ON tenancy.files FOR SELECT
    USING (tenant_id = tenancy.current_tenant());
CREATE POLICY tenant_write ON tenancy.files FOR INSERT TO corpus_saas_app
    WITH CHECK (tenant_id = tenancy.current_tenant());
CREATE POLICY support_sees_all ON tenancy.users FOR SELECT TO corpus_saas_support USING (true);

CREATE VIEW tenancy.user_directory WITH (security_barrier) AS
    SELECT u.id, u.tenant_id, u.email, u.display_name FROM tenancy.users u;

RESET ROLE;

-- Explicit grants, some of them on columns only.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tenancy TO corpus_saas_app;
GRANT SELECT ON billing.subscriptions TO corpus_saas_app;
GRANT SELECT (id, tenant_id, email, display_name) ON tenancy.users TO corpus_saas_support;
REVOKE UPDATE ON tenancy.users FROM corpus_saas_app;
GRANT UPDATE (display_name, mfa_secret) ON tenancy.users TO corpus_saas_app;
GRANT SELECT ON tenancy.user_directory TO corpus_saas_support;
GRANT EXECUTE ON FUNCTION tenancy.tenant_user_count(bigint) TO corpus_saas_support;

-- Data (a superuser bypasses row-level security even when FORCEd).
INSERT INTO tenancy.tenants (slug, plan, created_at)
SELECT 'tenant-' || g, (ARRAY['free', 'team', 'enterprise'])[g % 3 + 1], timestamptz '2022-01-01' + g * interval '1 day'
FROM generate_series(1, 15) AS g;
INSERT INTO tenancy.users (tenant_id, email, display_name, password_hash, mfa_secret)
SELECT g % 15 + 1, 'user' || g || '@tenant' || (g % 15 + 1) || '.test', CASE WHEN g % 4 <> 0 THEN 'User ' || g END,
       '$argon2id$v=19$m=65536,t=3,p=4$' || md5(g::text), CASE WHEN g % 3 = 0 THEN md5('mfa' || g) END
FROM generate_series(1, 150) AS g;
INSERT INTO tenancy.projects (tenant_id, owner_id, name, settings)
SELECT u.tenant_id, u.id, 'Project of user ' || u.id, jsonb_build_object('color', u.id % 7, 'beta', u.id % 2 = 0)
FROM tenancy.users u WHERE u.id % 2 = 1;

SELECT lo_from_bytea(920001, convert_to('tenant 1 invoice', 'UTF8'));
SELECT lo_from_bytea(920002, decode(repeat('deadbeef', 10000), 'hex'));
SELECT lo_from_bytea(920003, convert_to('tenant 3 contract', 'UTF8'));
ALTER LARGE OBJECT 920001 OWNER TO corpus_saas_owner;
ALTER LARGE OBJECT 920002 OWNER TO corpus_saas_owner;
GRANT SELECT ON LARGE OBJECT 920001, 920002 TO corpus_saas_app;
GRANT SELECT, UPDATE ON LARGE OBJECT 920003 TO corpus_saas_support;
COMMENT ON LARGE OBJECT 920002 IS 'Uploaded by tenant 2';
INSERT INTO tenancy.files (tenant_id, project_id, file_name, blob) VALUES
    (1, 1, 'invoice.txt', 920001), (2, NULL, 'dump.bin', 920002), (3, 3, 'contract.txt', 920003);

INSERT INTO billing.subscriptions (tenant_id, seats, renews_on)
SELECT g, g * 3, date '2025-01-01' + g FROM generate_series(1, 15) AS g WHERE g % 2 = 0;
