-- The tables the CDP application writes for the failed-login and integration-timeout alerts
-- (roles/monitoring_alerts/README.md, "Tables the application writes"). Idempotent.
CREATE TABLE IF NOT EXISTS login_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    email           text NOT NULL,
    team_id         uuid REFERENCES team (id) ON DELETE SET NULL,
    succeeded       boolean NOT NULL,
    failure_reason  text,
    ip_address      inet
);
CREATE INDEX IF NOT EXISTS idx_login_attempts_failed ON login_attempts (attempted_at) WHERE NOT succeeded;

CREATE TABLE IF NOT EXISTS integration_calls (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    called_at       timestamptz NOT NULL DEFAULT now(),
    operation       text,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'error', 'timeout')),
    duration_ms     integer CHECK (duration_ms >= 0),
    error_message   text
);
CREATE INDEX IF NOT EXISTS idx_integration_calls_recent ON integration_calls (called_at, integration_id, outcome);
