-- Customer Data Platform: reference schema (PostgreSQL 15).
--
-- The 21 tables of the CDP migration plan (docs: "Database Migration Plan - Customer Data Platform"),
-- with the column counts the plan states. Where the plan is silent the design follows what a real
-- CDP application has, and so the real foreign-key graph differs from the plan's hand-written
-- "Phase 4" order, e.g.:
--   * roles.created_by -> team, so roles is not independent of team;
--   * uploaded_images.uploaded_by -> team, so uploaded_images is not a level-0 table;
--   * presentations.created_by -> team (besides cover_image_id -> uploaded_images);
--   * cohorts.segment_id -> segments (a cohort can be materialised from a segment);
--   * dashboard_tile_instances.dashboard_id -> dashboard_configurations (besides tile_id ->
--     dashboard_tiles), so the plan's order (instances before configurations) violates a FK;
--   * scheduled_reports.mailing_list_id -> mailing_lists (plan loads mailing_lists after it);
--   * team.manager_id -> team is a self-reference (the org chart).
-- Key types are a realistic mix: uuid primary keys almost everywhere, a bigserial in
-- role_permissions and a bigint identity in migration_history (sequences to carry over).

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS "pgcrypto";

-- 1. User management & authentication -------------------------------------------------------------

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    email       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'Login accounts (basic authentication identity).';
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE team (
    id             uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    created_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    email          text NOT NULL UNIQUE,
    full_name      text NOT NULL,
    password_hash  text NOT NULL CHECK (password_hash ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'),
    role           text NOT NULL DEFAULT 'viewer'
                   CHECK (role IN ('owner', 'admin', 'analyst', 'marketer', 'viewer')),
    permissions    text[] NOT NULL DEFAULT '{}',
    manager_id     uuid REFERENCES team (id) ON DELETE SET NULL,
    department     text,
    phone          text,
    timezone       text NOT NULL DEFAULT 'UTC',
    is_active      boolean NOT NULL DEFAULT true,
    last_login_at  timestamptz,
    settings       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (manager_id IS DISTINCT FROM id)
);
COMMENT ON TABLE team IS 'Team members of the workspace: bcrypt password hashes, role, org chart.';
COMMENT ON COLUMN team.password_hash IS 'bcrypt hash ($2a$/$2b$), never the password';
COMMENT ON COLUMN team.manager_id IS 'self-reference: the member''s manager';
CREATE INDEX idx_team_email ON team (email);
CREATE INDEX idx_team_created_by ON team (created_by);
CREATE INDEX idx_team_manager_id ON team (manager_id);

CREATE TABLE roles (
    id                 uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name               text NOT NULL UNIQUE,
    slug               text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]+$'),
    description        text,
    is_system          boolean NOT NULL DEFAULT false,
    is_default         boolean NOT NULL DEFAULT false,
    priority           integer NOT NULL DEFAULT 100,
    scope              text NOT NULL DEFAULT 'workspace' CHECK (scope IN ('global', 'workspace', 'project')),
    settings           jsonb NOT NULL DEFAULT '{}',
    allowed_ip_ranges  text[],
    created_by         uuid REFERENCES team (id) ON DELETE SET NULL,
    updated_by         uuid REFERENCES team (id) ON DELETE SET NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE roles IS 'Role-based access control: role definitions.';
CREATE INDEX idx_roles_created_by ON roles (created_by);
CREATE INDEX idx_roles_updated_by ON roles (updated_by);

CREATE TABLE permissions (
    id            uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    code          text NOT NULL UNIQUE,
    name          text NOT NULL,
    description   text,
    resource      text NOT NULL,
    action        text NOT NULL CHECK (action IN ('read', 'create', 'update', 'delete', 'export', 'admin')),
    is_dangerous  boolean NOT NULL DEFAULT false,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resource, action)
);
COMMENT ON TABLE permissions IS 'Granular permissions (resource x action).';

CREATE TABLE role_permissions (
    id             bigserial PRIMARY KEY,
    role_id        uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission_id  uuid NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
    granted_by     uuid REFERENCES team (id) ON DELETE SET NULL,
    conditions     jsonb,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (role_id, permission_id)
);
COMMENT ON TABLE role_permissions IS 'Role-permission mapping (bigserial key: a sequence to carry over).';
CREATE INDEX idx_role_permissions_permission_id ON role_permissions (permission_id);
CREATE INDEX idx_role_permissions_granted_by ON role_permissions (granted_by);

-- 2. Data analytics & segmentation ----------------------------------------------------------------

CREATE TABLE segments (
    id                 uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name               text NOT NULL,
    description        text,
    rules              jsonb NOT NULL,
    is_active          boolean NOT NULL DEFAULT true,
    estimated_size     bigint CHECK (estimated_size >= 0),
    tags               text[] NOT NULL DEFAULT '{}',
    created_by         uuid REFERENCES team (id) ON DELETE SET NULL,
    last_refreshed_at  timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE segments IS 'User segmentation rules and conditions (jsonb rule tree).';
CREATE INDEX idx_segments_active ON segments (is_active);
CREATE INDEX idx_segments_created_by ON segments (created_by);
CREATE INDEX idx_segments_tags ON segments USING gin (tags);

CREATE TABLE cohorts (
    id                        uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name                      text NOT NULL,
    description               text,
    segment_id                uuid REFERENCES segments (id) ON DELETE SET NULL,
    definition                jsonb NOT NULL,
    status                    text NOT NULL DEFAULT 'draft'
                              CHECK (status IN ('draft', 'active', 'syncing', 'paused', 'archived', 'error')),
    user_count                bigint NOT NULL DEFAULT 0 CHECK (user_count >= 0),
    amplitude_cohort_id       text,
    braze_segment_id          text,
    sync_to_amplitude         boolean NOT NULL DEFAULT false,
    sync_to_braze             boolean NOT NULL DEFAULT false,
    last_synced_at            timestamptz,
    sync_error                text,
    refresh_interval_minutes  integer CHECK (refresh_interval_minutes > 0),
    tags                      text[] NOT NULL DEFAULT '{}',
    created_by                uuid REFERENCES team (id) ON DELETE SET NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cohorts IS 'User cohorts, synced to Amplitude and Braze.';
CREATE INDEX idx_cohorts_status ON cohorts (status);
CREATE INDEX idx_cohorts_segment_id ON cohorts (segment_id);
CREATE INDEX idx_cohorts_created_by ON cohorts (created_by);

CREATE TABLE campaigns (
    id           uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name         text NOT NULL,
    description  text,
    cohort_id    uuid NOT NULL REFERENCES cohorts (id) ON DELETE RESTRICT,
    created_by   uuid REFERENCES team (id) ON DELETE SET NULL,
    channel      text NOT NULL CHECK (channel IN ('email', 'push', 'sms', 'in_app', 'webhook')),
    status       text NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled', 'failed')),
    schedule     jsonb,
    content      jsonb NOT NULL DEFAULT '{}',
    send_limit   integer CHECK (send_limit > 0),
    starts_at    timestamptz,
    ends_at      timestamptz,
    budget       numeric(12, 2),
    tags         text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR starts_at IS NULL OR ends_at >= starts_at)
);
COMMENT ON TABLE campaigns IS 'Marketing campaign automation.';
CREATE INDEX idx_campaigns_status ON campaigns (status);
CREATE INDEX idx_campaigns_cohort_id ON campaigns (cohort_id);
CREATE INDEX idx_campaigns_created_by ON campaigns (created_by);

CREATE TABLE campaign_jobs (
    id                uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    campaign_id       uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    scheduled_for     timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    recipients_count  integer NOT NULL DEFAULT 0,
    delivered_count   integer NOT NULL DEFAULT 0,
    error_message     text,
    result            jsonb,
    CHECK (delivered_count <= recipients_count)
);
COMMENT ON TABLE campaign_jobs IS 'Campaign execution tracking (one row per send batch).';
CREATE INDEX idx_campaign_jobs_campaign_id ON campaign_jobs (campaign_id, scheduled_for);
CREATE INDEX idx_campaign_jobs_pending ON campaign_jobs (scheduled_for) WHERE status IN ('queued', 'running');

-- 3. Dashboard & visualization --------------------------------------------------------------------

CREATE TABLE dashboard_tiles (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name            text NOT NULL,
    tile_type       text NOT NULL
                    CHECK (tile_type IN ('metric', 'line_chart', 'bar_chart', 'table', 'funnel', 'retention', 'text')),
    query_template  text,
    default_config  jsonb NOT NULL DEFAULT '{}',
    data_source     text NOT NULL DEFAULT 'snowflake' CHECK (data_source IN ('snowflake', 'amplitude', 'postgres')),
    is_public       boolean NOT NULL DEFAULT false,
    created_by      uuid REFERENCES team (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dashboard_tiles IS 'Dashboard tile templates (query + default visual config).';
CREATE INDEX idx_dashboard_tiles_created_by ON dashboard_tiles (created_by);

CREATE TABLE dashboard_configurations (
    id                        uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name                      text NOT NULL,
    owner_id                  uuid NOT NULL REFERENCES team (id) ON DELETE CASCADE,
    layout                    jsonb NOT NULL DEFAULT '{}',
    filters                   jsonb NOT NULL DEFAULT '{}',
    is_default                boolean NOT NULL DEFAULT false,
    is_shared                 boolean NOT NULL DEFAULT false,
    refresh_interval_seconds  integer CHECK (refresh_interval_seconds >= 30),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dashboard_configurations IS 'Dashboards: layout and global filters, owned by a team member.';
CREATE INDEX idx_dashboard_configurations_owner_id ON dashboard_configurations (owner_id);

CREATE TABLE dashboard_tile_instances (
    id                uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    dashboard_id      uuid NOT NULL REFERENCES dashboard_configurations (id) ON DELETE CASCADE,
    tile_id           uuid NOT NULL REFERENCES dashboard_tiles (id) ON DELETE RESTRICT,
    title             text,
    position_x        integer NOT NULL DEFAULT 0 CHECK (position_x >= 0),
    position_y        integer NOT NULL DEFAULT 0 CHECK (position_y >= 0),
    width             integer NOT NULL DEFAULT 4 CHECK (width BETWEEN 1 AND 12),
    height            integer NOT NULL DEFAULT 3 CHECK (height > 0),
    config_overrides  jsonb NOT NULL DEFAULT '{}',
    cached_result     jsonb,
    cache_expires_at  timestamptz,
    last_error        text,
    is_visible        boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dashboard_tile_instances IS 'A tile placed on a dashboard (references the dashboard and the template).';
CREATE INDEX idx_tiles_dashboard ON dashboard_tile_instances (dashboard_id);
CREATE INDEX idx_tile_instances_tile_id ON dashboard_tile_instances (tile_id);

-- 4. Reporting system -------------------------------------------------------------------------------

CREATE TABLE uploaded_images (
    id            uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    filename      text NOT NULL,
    content_type  text NOT NULL
                  CHECK (content_type IN ('image/png', 'image/jpeg', 'image/gif', 'image/svg+xml', 'image/webp')),
    byte_size     integer NOT NULL CHECK (byte_size >= 0),
    data          bytea NOT NULL,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    uploaded_by   uuid REFERENCES team (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (byte_size = octet_length(data))
);
COMMENT ON TABLE uploaded_images IS 'Image assets stored inline (bytea) for presentations and slides.';
CREATE INDEX idx_uploaded_images_uploaded_by ON uploaded_images (uploaded_by);
CREATE INDEX idx_uploaded_images_sha256 ON uploaded_images (sha256);

CREATE TABLE presentations (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    title           text NOT NULL,
    description     text,
    cover_image_id  uuid REFERENCES uploaded_images (id) ON DELETE SET NULL,
    created_by      uuid REFERENCES team (id) ON DELETE SET NULL,
    theme           jsonb NOT NULL DEFAULT '{}',
    is_template     boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE presentations IS 'Report presentations (a deck of slides).';
CREATE INDEX idx_presentations_cover_image_id ON presentations (cover_image_id);
CREATE INDEX idx_presentations_created_by ON presentations (created_by);

CREATE TABLE slides (
    id               uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    presentation_id  uuid NOT NULL REFERENCES presentations (id) ON DELETE CASCADE,
    position         integer NOT NULL CHECK (position >= 0),
    title            text,
    layout           text NOT NULL DEFAULT 'content'
                     CHECK (layout IN ('title', 'content', 'chart', 'image', 'two_column')),
    content          jsonb NOT NULL DEFAULT '{}',
    image_id         uuid REFERENCES uploaded_images (id) ON DELETE SET NULL,
    speaker_notes    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (presentation_id, position)
);
COMMENT ON TABLE slides IS 'Slides of a presentation, optionally showing an uploaded image.';
CREATE INDEX idx_slides_image_id ON slides (image_id);

CREATE TABLE mailing_lists (
    id                uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name              text NOT NULL,
    description       text,
    owner_id          uuid REFERENCES team (id) ON DELETE SET NULL,
    emails            text[] NOT NULL DEFAULT '{}',
    provider          text NOT NULL DEFAULT 'internal'
                      CHECK (provider IN ('internal', 'braze', 'sendgrid', 'mailchimp')),
    external_list_id  text,
    is_active         boolean NOT NULL DEFAULT true,
    subscriber_count  integer NOT NULL DEFAULT 0 CHECK (subscriber_count >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE mailing_lists IS 'Email distribution lists for scheduled reports.';
CREATE INDEX idx_mailing_lists_owner_id ON mailing_lists (owner_id);

CREATE TABLE scheduled_reports (
    id                    uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name                  text NOT NULL,
    description           text,
    presentation_id       uuid NOT NULL REFERENCES presentations (id) ON DELETE CASCADE,
    created_by            uuid REFERENCES team (id) ON DELETE SET NULL,
    mailing_list_id       uuid REFERENCES mailing_lists (id) ON DELETE SET NULL,
    schedule_cron         text NOT NULL,
    timezone              text NOT NULL DEFAULT 'UTC',
    format                text NOT NULL DEFAULT 'pdf' CHECK (format IN ('pdf', 'csv', 'xlsx', 'html', 'png')),
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'disabled', 'error')),
    recipients            text[] NOT NULL DEFAULT '{}',
    cc_recipients         text[],
    subject_template      text,
    body_template         text,
    filters               jsonb NOT NULL DEFAULT '{}',
    parameters            jsonb NOT NULL DEFAULT '{}',
    include_attachments   boolean NOT NULL DEFAULT true,
    attachment_max_mb     integer CHECK (attachment_max_mb BETWEEN 1 AND 50),
    last_run_at           timestamptz,
    next_run_at           timestamptz,
    last_status           text CHECK (last_status IN ('succeeded', 'failed', 'timeout', 'cancelled')),
    consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    retry_policy          jsonb,
    snowflake_warehouse   text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE scheduled_reports IS 'Automated report scheduling: which presentation, when, to whom.';
CREATE INDEX idx_scheduled_reports_presentation_id ON scheduled_reports (presentation_id);
CREATE INDEX idx_scheduled_reports_created_by ON scheduled_reports (created_by);
CREATE INDEX idx_scheduled_reports_mailing_list_id ON scheduled_reports (mailing_list_id);
CREATE INDEX idx_scheduled_reports_next_run ON scheduled_reports (next_run_at) WHERE status = 'active';

CREATE TABLE report_executions (
    id                   uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    scheduled_report_id  uuid NOT NULL REFERENCES scheduled_reports (id) ON DELETE CASCADE,
    status               text NOT NULL
                         CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timeout')),
    triggered_by         text NOT NULL DEFAULT 'schedule' CHECK (triggered_by IN ('schedule', 'manual', 'retry', 'api')),
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    duration_ms          integer CHECK (duration_ms >= 0),
    row_count            bigint,
    output_url           text,
    output_size_bytes    bigint,
    error_message        text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);
COMMENT ON TABLE report_executions IS 'One row per run of a scheduled report.';
CREATE INDEX idx_executions_report ON report_executions (scheduled_report_id);
CREATE INDEX idx_report_executions_started_at ON report_executions (started_at);

-- 5. Integration & migration ----------------------------------------------------------------------

CREATE TABLE integrations (
    id                     uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name                   text NOT NULL UNIQUE,
    provider               text NOT NULL CHECK (provider IN (
                               'snowflake', 'amplitude', 'braze', 'sendgrid', 'slack', 's3', 'salesforce', 'segment')),
    encrypted_credentials  bytea,
    config                 jsonb NOT NULL DEFAULT '{}',
    status                 text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('connected', 'disconnected', 'error', 'pending')),
    last_verified_at       timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE integrations IS 'External service integrations.';
COMMENT ON COLUMN integrations.encrypted_credentials IS
    'pgcrypto encrypt(convert_to(<json>, ''UTF8''), <key>, ''aes''): never plaintext';

CREATE TABLE environment_configurations (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    environment     text NOT NULL CHECK (environment IN ('development', 'staging', 'production')),
    key             text NOT NULL,
    value           text,
    is_secret       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, environment, key)
);
COMMENT ON TABLE environment_configurations IS 'Environment-specific settings of an integration.';

CREATE TABLE migration_history (
    id                  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    integration_id      uuid REFERENCES integrations (id) ON DELETE SET NULL,
    migration_name      text NOT NULL,
    version             text NOT NULL,
    direction           text NOT NULL DEFAULT 'up' CHECK (direction IN ('up', 'down')),
    source_environment  text,
    target_environment  text,
    status              text NOT NULL
                        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'rolled_back')),
    started_at          timestamptz,
    finished_at         timestamptz,
    duration_ms         integer,
    rows_migrated       bigint,
    checksum            text,
    executed_by         text,
    error_message       text,
    log                 text,
    details             jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE migration_history IS 'Migration tracking and logs (bigint identity key).';
CREATE INDEX idx_migration_history_integration_id ON migration_history (integration_id);
CREATE INDEX idx_migration_history_version ON migration_history (version);
