"""Deterministic data generator for the CDP reference database.

Loads cdp_reference/schema.sql (the 21 tables of the CDP migration plan) and fills it with realistic,
fully deterministic data, generated server-side with INSERT ... SELECT FROM generate_series:

* every value derives from the row number: hashint8extended(row, seed) with a fixed seed per column
  (PostgreSQL's 64-bit integer hash, kept stable across releases because hash partitioning depends
  on it), or md5() in a few small tables; uuids are version-4 shaped values built from two such
  hashes. Nothing comes from random(), gen_random_uuid(), now() or gen_salt(), so two loads at the
  same scale have identical content (compare e.g. md5(string_agg(t::text ...)) per table);
* the size is linear in ``scale``: scale 1 is about 100 MB (the sum of pg_total_relation_size of the
  21 tables, i.e. heap + TOAST + indexes, measured after the load; that is pg_database_size minus an
  empty database's ~7.5 MB, give or take the catalog rows of the schema);
* report_executions and campaign_jobs are the big tables; permissions, roles, role_permissions,
  integrations and environment_configurations have a fixed few dozen (hundred) rows at any scale;
* bcrypt password hashes (cost 4, 256 distinct, reused), pgcrypto-encrypted integration
  credentials (AES, fixed demo key ``CREDENTIALS_KEY``), bytea images, jsonb, text[], NULLs, empty
  strings and unicode text.

Tables are loaded in foreign-key dependency order with every constraint in force, in one
transaction. CLI (idempotent; the password comes from --password-file or PGPASSWORD, never argv):

    python -m cdp_reference.generate --host H --port P --dbname D --user U --password-file F \
        --scale 1 [--drop]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
import time
from collections.abc import Callable

import psycopg2

SCHEMA_FILE = pathlib.Path(__file__).with_name("schema.sql")

# Fixed demo key of the integrations.encrypted_credentials column: decrypt with
#   convert_from(decrypt(encrypted_credentials, convert_to(<key>, 'UTF8'), 'aes'), 'UTF8')
CREDENTIALS_KEY = "cdp-reference-demo-credentials-key"

# Every team member's password is 'password-<k>' with k = (row number - 1) % BCRYPT_DISTINCT.
BCRYPT_DISTINCT = 256

# Load order: a topological order of the real foreign-key graph (parents first).
TABLES = (
    "users",
    "permissions",
    "integrations",
    "team",
    "roles",
    "role_permissions",
    "segments",
    "cohorts",
    "campaigns",
    "campaign_jobs",
    "dashboard_tiles",
    "dashboard_configurations",
    "dashboard_tile_instances",
    "uploaded_images",
    "presentations",
    "slides",
    "mailing_lists",
    "scheduled_reports",
    "report_executions",
    "environment_configurations",
    "migration_history",
)

# The tables whose row counts identify a load's scale (see the CLI).
SCALE_PROBE_TABLES = ("users", "team", "report_executions")

# Rows at any scale.
_FIXED_ROWS = {
    "permissions": 48,  # 8 resources x 6 actions
    "roles": 24,
    "role_permissions": 24 * 16,  # 16 permissions per role
    "integrations": 16,
    "environment_configurations": 16 * 3,  # one setting per integration and environment
}

# (rows at scale 1, minimum rows at any scale).
_SCALED_ROWS = {
    "users": (6000, 30),
    "team": (600, 20),
    "segments": (2500, 10),
    "cohorts": (4000, 10),
    "campaigns": (3000, 10),
    "campaign_jobs": (70000, 50),
    "dashboard_tiles": (150, 10),
    "dashboard_configurations": (800, 10),
    "dashboard_tile_instances": (8000, 20),
    "uploaded_images": (600, 10),
    "presentations": (1000, 10),
    "slides": (9000, 20),
    "mailing_lists": (300, 5),
    "scheduled_reports": (1500, 10),
    "report_executions": (105000, 50),
    "migration_history": (300, 20),
}

# All timestamps lie in [BASE, BASE + SPAN_SECONDS): 2023-01-01 .. mid 2025, UTC.
_BASE = "timestamptz '2023-01-01 00:00:00+00'"
_BASE_NAIVE = "timestamp '2023-01-01 00:00:00'"
_SPAN_SECONDS = 78_000_000


class TablesExistError(RuntimeError):
    """The database already has (some of) the CDP tables and drop_existing was not given."""


def expected_row_counts(scale: float) -> dict:
    """Rows per table that load(conn_params, scale) creates, in load order."""
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    counts = {}
    for table in TABLES:
        if table in _FIXED_ROWS:
            counts[table] = _FIXED_ROWS[table]
        else:
            base, minimum = _SCALED_ROWS[table]
            counts[table] = max(minimum, int(base * scale + 0.5))
    return counts


# --- SQL fragments: deterministic pseudo-random values derived from the row number ------------------


def _lit(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _seed(salt: str) -> int:
    """A fixed 56-bit seed for a salt (stable across runs and Python versions)."""
    return int.from_bytes(hashlib.sha256(salt.encode()).digest()[:7], "big")


def _hash(salt: str, expr: str = "i") -> str:
    """A 64-bit hash of the integer expr, seeded by salt (hashint8extended: fast and stable)."""
    return f"hashint8extended(({expr})::bigint, {_seed(salt)})"


def _h(salt: str, expr: str = "i") -> str:
    """A uniform integer in [0, 2^31) derived from the integer expr."""
    return f"({_hash(salt, expr)} & 2147483647)::int"


def _r(salt: str, mod: int, expr: str = "i") -> str:
    """A uniform integer in [0, mod)."""
    return f"({_h(salt, expr)} % {int(mod)})"


def _hex(salt: str, digits: int = 15, expr: str = "i") -> str:
    """digits (<= 15) lowercase hex characters derived from expr."""
    return f"lpad(to_hex({_hash(salt, expr)} & {(1 << (4 * digits)) - 1}), {digits}, '0')"


def _uid(table: str, expr: str = "i") -> str:
    """The uuid (version 4 layout) primary key of row number expr (1-based) of table."""
    high = f"(({_hash(table + '.uuid.hi', expr)} & -61441) | 16384)"  # version nibble 4
    # variant bits 10: keep 62 bits, then subtract 2^63
    low = f"(({_hash(table + '.uuid.lo', expr)} & 4611686018427387903) - 9223372036854775807 - 1)"
    return f"encode(int8send({high}) || int8send({low}), 'hex')::uuid"


def _ref(table: str, n: int, salt: str, expr: str = "i", skew: bool = False) -> str:
    """The uuid of a pseudo-random row of table (n rows); skew=True favours the first rows."""
    if not skew:
        return _uid(table, f"1 + {_r(salt, n, expr)}")
    a, b = _r(salt + "a", n, expr), _r(salt + "b", n, expr)
    return _uid(table, f"1 + ({a}::bigint * {b}) / {int(n)}")


def _pick(salt: str, values, expr: str = "i") -> str:
    """One of values, uniformly."""
    array = ", ".join(_lit(v) for v in values)
    return f"(ARRAY[{array}])[1 + {_r(salt, len(values), expr)}]"


def _weighted(salt: str, pairs, expr: str = "i") -> str:
    """One of the values of pairs [(value, weight), ...] with the given integer weights."""
    expanded = [value for value, weight in pairs for _ in range(weight)]
    return _pick(salt, expanded, expr)


def _pct(salt: str, percent: int, expr: str = "i") -> str:
    """A boolean that is true for about percent % of rows."""
    return f"({_r(salt, 100, expr)} < {int(percent)})"


def _ts(seconds_expr: str) -> str:
    return f"({_BASE} + ({seconds_expr}) * interval '1 second')"


def _created(n: int, salt: str) -> str:
    """Seconds offset of a creation time: increasing with the row number, plus jitter."""
    step = max(1, _SPAN_SECONDS // max(1, n))
    return f"(i::bigint * {step} + {_r(salt, step)})"


def _text_array(values) -> str:
    return "ARRAY[" + ", ".join(_lit(v) for v in values) + "]::text[]"


# --- vocabulary (with unicode, apostrophes and a few empty strings) -----------------------------------

_FIRST = [
    ("Ana", "ana"), ("José", "jose"), ("Zoë", "zoe"), ("Björn", "bjorn"), ("Chloé", "chloe"),
    ("Dmitri", "dmitri"), ("Mei", "mei"), ("Øystein", "oystein"), ("Kwame", "kwame"),
    ("Łukasz", "lukasz"), ("Priya", "priya"), ("Sean", "sean"), ("Aiko", "aiko"), ("Fatima", "fatima"),
    ("Mateo", "mateo"), ("Emma", "emma"), ("Noah", "noah"), ("Olivia", "olivia"), ("Liam", "liam"),
    ("Sofia", "sofia"), ("Yusuf", "yusuf"), ("Hana", "hana"), ("Carlos", "carlos"), ("Ingrid", "ingrid"),
]
_LAST = [
    ("García", "garcia"), ("Müller", "muller"), ("Nguyễn", "nguyen"), ("O'Brien", "obrien"),
    ("Smith", "smith"), ("Kowalski", "kowalski"), ("Dubois", "dubois"), ("Tanaka", "tanaka"),
    ("Ivanova", "ivanova"), ("Sørensen", "sorensen"), ("Şahin", "sahin"), ("Patel", "patel"),
    ("Johnson", "johnson"), ("Rossi", "rossi"), ("Kim", "kim"), ("Silva", "silva"), ("Cohen", "cohen"),
    ("van der Berg", "vanderberg"), ("Okafor", "okafor"), ("Lindqvist", "lindqvist"),
]
_DOMAINS = ["gmail.com", "acme-retail.com", "outlook.com", "example.org", "yahoo.co.jp", "web.de",
            "proton.me"]
_DEPARTMENTS = ["Marketing", "Growth", "Data Science", "Engineering", "CRM", "Sales", "Finance", "Product"]
_TIMEZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
              "Asia/Tokyo", "America/Mexico_City", "Asia/Kolkata"]
_PERMISSION_RESOURCES = ["segments", "cohorts", "campaigns", "dashboards", "reports", "integrations",
                         "team", "billing"]
_PERMISSION_ACTIONS = ["read", "create", "update", "delete", "export", "admin"]
_PERMISSION_CODES = [f"{r}.{a}" for r in _PERMISSION_RESOURCES for a in _PERMISSION_ACTIONS]
# Extra grants of a team member (a prefix of this list: from none to all).
_MEMBER_PERMISSIONS = ["segments.read", "cohorts.read", "dashboards.read", "reports.read", "campaigns.read",
                       "segments.create", "campaigns.create", "reports.export", "integrations.read"]
_ROLE_NAMES = [
    "Owner", "Administrator", "Workspace Admin", "Data Analyst", "Senior Data Analyst", "Data Engineer",
    "Marketing Manager", "Campaign Manager", "CRM Specialist", "Growth Marketer", "Content Editor",
    "Report Viewer", "Dashboard Viewer", "Billing Admin", "Integration Admin", "Security Auditor",
    "Support Agent", "Read Only", "Guest", "Agency Partner", "Regional Manager EMEA",
    "Regional Manager APAC", "Regional Manager LATAM", "API Service Account",
]
_SEGMENT_NAMES = [
    "High-value customers", "Churn risk", "Recent purchasers", "Cart abandoners", "Newsletter subscribers",
    "Clientes frecuentes de México", "Käufer in Deutschland", "日本のアクティブユーザー", "🚀 Power users",
    "Dormant 90d", "Trial users", "VIP — lifetime value > $1k", "Mobile-only users", "Loyalty tier: Gold",
]
_COUNTRIES = ["US", "MX", "DE", "JP", "GB", "FR", "BR", "IN", "CA", "ES"]
_EVENTS = ["purchase", "add_to_cart", "page_view", "app_open", "signup", "email_click", "push_open"]
_TAGS = ["q1", "q2", "q3", "q4", "retention", "acquisition", "vip", "experiment", "emea", "apac", "latam",
         "mobile", "web", "holiday", "b2b", "ñandú", "テスト"]
_CRON = ["0 8 * * 1", "0 9 * * *", "30 6 * * 1-5", "0 0 1 * *", "0 12 * * 5", "15 7 * * *", "0 */6 * * *"]
_SNOWFLAKE_WAREHOUSES = ["REPORTING_WH", "ANALYTICS_WH", "ADHOC_XS", "CDP_TRANSFORM_WH"]
_REPORT_ERRORS = [
    "Snowflake: SQL compilation error: Object 'ANALYTICS.PUBLIC.EVENTS_DAILY' does not exist or not "
    "authorized.",
    "Snowflake: Warehouse 'REPORTING_WH' cannot be resumed because resource monitor 'MONTHLY' has exceeded "
    "its quota.",
    "Renderer: chromium exited with code 137 (out of memory) while rendering slide 7",
    "SMTP 552 5.3.4 Message size exceeds fixed maximum message size",
    "Amplitude API 429: rate limit exceeded, retry after 60s",
    "Timeout: query exceeded statement_timeout of 300000 ms",
    "Template error: 'revenue_eur' is undefined in «Résumé hebdomadaire»",
]
_MIGRATION_ERRORS = [
    'ERROR: insert or update on table "campaigns" violates foreign key constraint "campaigns_cohort_id_fkey"',
    'ERROR: could not obtain lock on relation "report_executions"',
    'ERROR: duplicate key value violates unique constraint "team_email_key"',
]
_JOB_ERRORS = [
    "Braze API 400: invalid external_id in batch",
    "Braze API 503: service unavailable",
    "SendGrid 401: API key expired",
    "Push provider rejected 12 device tokens (unregistered)",
    "Cohort snapshot missing: cohort is archived",
    "Webhook endpoint returned HTTP 500",
]


# --- per-table INSERT ... SELECT statements --------------------------------------------------------------


def _table_sql(n: dict) -> dict:
    """The INSERT statement of every table for the row counts n (see expected_row_counts)."""
    sql = {}
    first_uni = [f for f, _ in _FIRST]
    first_ascii = [a for _, a in _FIRST]
    last_uni = [f for f, _ in _LAST]
    last_ascii = [a for _, a in _LAST]

    sql["users"] = f"""
INSERT INTO users (id, email, created_at)
SELECT {_uid("users")},
       {_pick("u.f", first_ascii)} || '.' || {_pick("u.l", last_ascii)} || i
           || '@' || {_pick("u.d", _DOMAINS)},
       {_ts(_created(n["users"], "u.c"))}
FROM generate_series(1, {n["users"]}) AS g(i)"""

    sql["permissions"] = f"""
INSERT INTO permissions (id, code, name, description, resource, action, is_dangerous, metadata,
                         created_at, updated_at)
SELECT {_uid("permissions")}, resource || '.' || action,
       initcap(action) || ' ' || replace(resource, '_', ' '),
       CASE WHEN i % 7 = 0 THEN '' WHEN i % 5 = 0 THEN NULL
            ELSE 'Allows to ' || action || ' ' || resource || ' in the workspace' END,
       resource, action, action IN ('delete', 'admin', 'export'),
       jsonb_build_object('ui_group', initcap(resource), 'since_version', '1.' || (i % 9), 'audited',
                          action IN ('delete', 'admin', 'export')),
       {_ts("i * 60")}, {_ts("i * 60 + 86400 * (i % 30)")}
FROM (SELECT i, ({_text_array(_PERMISSION_RESOURCES)})[1 + (i - 1) / 6] AS resource,
             ({_text_array(_PERMISSION_ACTIONS)})[1 + (i - 1) % 6] AS action
      FROM generate_series(1, {n["permissions"]}) AS g(i)) s"""

    providers = ["snowflake", "amplitude", "braze", "sendgrid", "slack", "s3", "salesforce", "segment"]
    sql["integrations"] = f"""
INSERT INTO integrations (id, name, provider, encrypted_credentials, config, status, last_verified_at,
                          created_at, updated_at)
SELECT {_uid("integrations")},
       initcap(provider) || CASE WHEN i <= 8 THEN ' (production)' ELSE ' (sandbox)' END,
       provider,
       CASE WHEN i = 16 THEN NULL ELSE
       encrypt(convert_to(jsonb_build_object(
                   'account', provider || '-' || substr(md5('acct:' || i), 1, 8),
                   'username', 'CDP_SVC_' || upper(provider),
                   'password', 'demo-' || md5('secret:' || i),
                   'api_key', 'sk_live_' || md5('api-key:' || i) || md5('api-key2:' || i))::text, 'UTF8'),
               convert_to({_lit(CREDENTIALS_KEY)}, 'UTF8'), 'aes') END,
       jsonb_build_object('region', {_pick("i.reg", ["us-east-1", "eu-central-1", "ap-northeast-1"])},
                          'timeout_seconds', 30 + 15 * (i % 4), 'retries', i % 5,
                          'sync_enabled', i % 3 <> 0, 'scopes', to_jsonb({_text_array(["read", "write"])})),
       CASE WHEN i = 16 THEN 'pending' WHEN i % 7 = 0 THEN 'error' WHEN i % 5 = 0 THEN 'disconnected'
            ELSE 'connected' END,
       CASE WHEN i = 16 THEN NULL ELSE {_ts("70000000 + i * 3600")} END,
       {_ts("i * 86400")}, {_ts("60000000 + i * 7200")}
FROM (SELECT i, ({_text_array(providers)})[1 + (i - 1) % 8] AS provider
      FROM generate_series(1, {n["integrations"]}) AS g(i)) s"""

    leaders = max(1, n["team"] // 10)
    team_roles = [("admin", 8), ("analyst", 30), ("marketer", 35), ("viewer", 27)]
    sql["team"] = f"""
WITH hashes AS (
    SELECT k, crypt('password-' || k,
                    '$2a$04$' || substr(translate(encode(decode(md5('bcrypt-salt:' || k), 'hex'), 'base64'),
                                                  '+', '.'), 1, 22)) AS h
    FROM generate_series(0, {min(BCRYPT_DISTINCT, n["team"]) - 1}) AS k
)
INSERT INTO team (id, created_by, email, full_name, password_hash, role, permissions, manager_id, department,
                  phone, timezone, is_active, last_login_at, settings, created_at, updated_at)
SELECT {_uid("team")},
       CASE WHEN {_pct("t.cbn", 12)} THEN NULL ELSE {_ref("users", n["users"], "t.cb")} END,
       {_pick("t.f", first_ascii)} || '.' || {_pick("t.l", last_ascii)} || i || '@acme-cdp.example',
       {_pick("t.f", first_uni)} || ' ' || {_pick("t.l", last_uni)},
       hashes.h,
       CASE WHEN i = 1 THEN 'owner' ELSE {_weighted("t.role", team_roles)} END,
       ({_text_array(_MEMBER_PERMISSIONS)})[1:{_r("t.perm", len(_MEMBER_PERMISSIONS) + 1)}],
       CASE WHEN i = 1 THEN NULL WHEN i <= {leaders} THEN {_uid("team", "1")}
            ELSE {_uid("team", f"1 + {_r('t.mgr', leaders)}")} END,
       CASE WHEN {_pct("t.dn", 15)} THEN NULL ELSE {_pick("t.d", _DEPARTMENTS)} END,
       CASE {_r("t.phn", 10)} WHEN 0 THEN NULL WHEN 1 THEN ''
            ELSE '+1-555-' || lpad(({_r("t.ph", 10000)})::text, 4, '0') END,
       {_pick("t.tz", _TIMEZONES)},
       NOT {_pct("t.act", 8)},
       CASE WHEN {_pct("t.lln", 15)} THEN NULL ELSE {_ts(f"c + 86400 + {_r('t.ll', 20_000_000)}")} END,
       jsonb_build_object('theme', {_pick("t.th", ["light", "dark", "system"])},
                          'locale', {_pick("t.loc", ["en-US", "es-MX", "de-DE", "ja-JP", "en-GB"])},
                          'notifications', jsonb_build_object('email', {_pct("t.ne", 80)},
                                                              'slack', {_pct("t.ns", 40)}),
                          'onboarding_completed', {_pct("t.ob", 90)}),
       {_ts("c")}, {_ts(f"c + {_r('t.u', 5_000_000)}")}
FROM (SELECT i, {_created(n["team"], "t.c")} AS c FROM generate_series(1, {n["team"]}) AS g(i) OFFSET 0) s
JOIN hashes ON hashes.k = (s.i - 1) % {BCRYPT_DISTINCT}
ORDER BY s.i"""

    admins = min(n["team"], 12)
    sql["roles"] = f"""
INSERT INTO roles (id, name, slug, description, is_system, is_default, priority, scope, settings,
                   allowed_ip_ranges, created_by, updated_by, created_at, updated_at)
SELECT {_uid("roles")}, name, trim(both '-' from regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g')),
       CASE WHEN i % 6 = 0 THEN '' WHEN i % 4 = 0 THEN NULL ELSE 'Built for ' || lower(name) || ' duties' END,
       i <= 3, i = 18, i * 10,
       CASE WHEN i <= 2 THEN 'global' WHEN i % 5 = 0 THEN 'project' ELSE 'workspace' END,
       jsonb_build_object('mfa_required', i <= 5 OR i = 14, 'session_ttl_minutes', 60 * (1 + i % 8)),
       CASE WHEN i IN (2, 14, 16) THEN {_text_array(["10.0.0.0/8", "192.168.10.0/24"])}
            WHEN i % 3 = 0 THEN '{{}}'::text[] END,
       {_uid("team", f"1 + {_r('r.cb', admins)}")},
       CASE WHEN i % 2 = 0 THEN {_uid("team", f"1 + {_r('r.ub', admins)}")} END,
       {_ts("86400 * i")}, {_ts("86400 * i + 3600 * (i % 13)")}
FROM (SELECT i, ({_text_array(_ROLE_NAMES)})[i] AS name FROM generate_series(1, {n["roles"]}) AS g(i)) s"""

    sql["role_permissions"] = f"""
INSERT INTO role_permissions (id, role_id, permission_id, granted_by, conditions, expires_at, created_at)
SELECT i, {_uid("roles", "1 + (i - 1) / 16")},
       {_uid("permissions", "1 + ((1 + (i - 1) / 16) * 7 + (i - 1) % 16) % 48")},
       CASE WHEN i % 9 = 0 THEN NULL ELSE {_uid("team", f"1 + {_r('rp.g', admins)}")} END,
       CASE WHEN i % 11 = 0 THEN jsonb_build_object('region', {_pick("rp.reg", ["EMEA", "APAC", "LATAM"])},
                                                    'own_resources_only', true) END,
       CASE WHEN i % 23 = 0 THEN {_ts("75000000 + i * 3600")} END,
       {_ts("86400 * (1 + (i - 1) / 16) + i * 60")}
FROM generate_series(1, {n["role_permissions"]}) AS g(i)"""

    sql["segments"] = f"""
INSERT INTO segments (id, name, description, rules, is_active, estimated_size, tags, created_by,
                      last_refreshed_at, created_at, updated_at)
SELECT {_uid("segments")}, {_pick("s.n", _SEGMENT_NAMES)} || ' #' || i,
       CASE {_r("s.dn", 10)} WHEN 0 THEN NULL WHEN 1 THEN ''
            ELSE 'Users matching ' || {_pick("s.ev", _EVENTS)} || ' activity in '
                 || {_pick("s.co", _COUNTRIES)} END,
       jsonb_build_object(
           'version', 2, 'operator', {_pick("s.op", ["and", "or"])},
           'conditions', jsonb_build_array(
               jsonb_build_object('field', 'country', 'op', 'in',
                                  'value', to_jsonb(ARRAY[{_pick("s.c1", _COUNTRIES)},
                                                          {_pick("s.c2", _COUNTRIES)}])),
               jsonb_build_object('field', 'events.' || {_pick("s.ev", _EVENTS)} || '.count_30d',
                                  'op', {_pick("s.cmp", ["gte", "lte", "eq"])}, 'value', {_r("s.v", 20)}),
               jsonb_build_object('field', 'lifetime_value', 'op', 'gt',
                                  'value', round({_r("s.ltv", 500000)} / 100.0, 2)))),
       NOT {_pct("s.act", 20)},
       CASE WHEN {_pct("s.esn", 10)} THEN NULL ELSE {_r("s.es", 2_000_000)} END,
       ({_text_array(_TAGS)})[1 + {_r("s.t0", 12)}:1 + {_r("s.t0", 12)} + {_r("s.tn", 4)}],
       CASE WHEN {_pct("s.cbn", 5)} THEN NULL ELSE {_ref("team", n["team"], "s.cb", skew=True)} END,
       CASE WHEN {_pct("s.lrn", 15)} THEN NULL ELSE {_ts(f"c + {_r('s.lr', 3_000_000)}")} END,
       {_ts("c")}, {_ts(f"c + {_r('s.u', 4_000_000)}")}
FROM (SELECT i, {_created(n["segments"], "s.c")} AS c
      FROM generate_series(1, {n["segments"]}) AS g(i) OFFSET 0) s"""

    cohort_status = [("active", 55), ("draft", 14), ("syncing", 4), ("paused", 10), ("archived", 14),
                     ("error", 3)]
    sql["cohorts"] = f"""
INSERT INTO cohorts (id, name, description, segment_id, definition, status, user_count, amplitude_cohort_id,
                     braze_segment_id, sync_to_amplitude, sync_to_braze, last_synced_at, sync_error,
                     refresh_interval_minutes, tags, created_by, created_at, updated_at)
SELECT {_uid("cohorts")},
       {_pick("c.n", ["Weekly actives", "Lapsed buyers", "Onboarding week 1", "Holiday shoppers",
                      "Compradores recurrentes", "Neukunden", "高頻度ユーザー", "Beta testers ✨"])}
           || ' ' || i,
       CASE {_r("c.dn", 8)} WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Cohort for ' || {_pick("c.p", _EVENTS)}
            || ' follow-up' END,
       CASE WHEN {_pct("c.sn", 30)} THEN NULL ELSE {_ref("segments", n["segments"], "c.s")} END,
       jsonb_build_object('type', {_pick("c.t", ["behavioral", "static", "predictive"])},
                          'window_days', (ARRAY[7, 14, 30, 90])[1 + {_r("c.w", 4)}],
                          'event', {_pick("c.e", _EVENTS)}, 'min_count', 1 + {_r("c.mc", 5)},
                          'exclude_test_users', true),
       status, {_r("c.uc", 5_000_000)},
       CASE WHEN amp THEN 'amp_' || substr(md5('amp:' || i), 1, 12) END,
       CASE WHEN braze THEN {_uid("braze", "i")}::text END,
       amp, braze,
       CASE WHEN (amp OR braze) AND status <> 'draft' THEN {_ts(f"c + {_r('c.ls', 5_000_000)}")} END,
       CASE WHEN status = 'error' THEN {_pick("c.err", ["Amplitude API 401: invalid API key",
                                                            "Braze: segment limit reached (1000)",
                                                            "Sync timed out after 900 s"])} END,
       CASE WHEN {_pct("c.rin", 25)} THEN NULL ELSE (ARRAY[15, 60, 360, 1440])[1 + {_r("c.ri", 4)}] END,
       ({_text_array(_TAGS)})[1 + {_r("c.t0", 14)}:1 + {_r("c.t0", 14)} + {_r("c.tn", 3)}],
       CASE WHEN {_pct("c.cbn", 4)} THEN NULL ELSE {_ref("team", n["team"], "c.cb", skew=True)} END,
       {_ts("c")}, {_ts(f"c + {_r('c.u', 6_000_000)}")}
FROM (SELECT i, {_created(n["cohorts"], "c.c")} AS c, {_weighted("c.st", cohort_status)} AS status,
             {_pct("c.amp", 60)} AS amp, {_pct("c.bz", 45)} AS braze
      FROM generate_series(1, {n["cohorts"]}) AS g(i) OFFSET 0) s"""

    campaign_status = [("draft", 10), ("scheduled", 8), ("running", 12), ("paused", 5), ("completed", 55),
                       ("cancelled", 6), ("failed", 4)]
    sql["campaigns"] = f"""
INSERT INTO campaigns (id, name, description, cohort_id, created_by, channel, status, schedule, content,
                       send_limit, starts_at, ends_at, budget, tags, created_at, updated_at)
SELECT {_uid("campaigns")},
       {_pick("cp.n", ["Spring sale", "Win-back", "Welcome series", "Black Friday", "Cyber Monday",
                       "Rebajas de verano", "Sommeraktion", "新春セール", "Referral boost 🎁"])} || ' ' || i,
       CASE {_r("cp.dn", 6)} WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Drive ' || {_pick("cp.e", _EVENTS)}
            || ' among ' || {_pick("cp.co", _COUNTRIES)} || ' users' END,
       {_ref("cohorts", n["cohorts"], "cp.ch", skew=True)},
       CASE WHEN {_pct("cp.cbn", 5)} THEN NULL ELSE {_ref("team", n["team"], "cp.cb", skew=True)} END,
       channel, status,
       CASE WHEN status = 'draft' THEN NULL
            ELSE jsonb_build_object('type', {_pick("cp.st", ["one_off", "recurring", "triggered"])},
                                    'cron', {_pick("cp.cr", _CRON)}, 'timezone', {_pick("cp.tz", _TIMEZONES)},
                                    'quiet_hours', jsonb_build_array(22, 7)) END,
       jsonb_build_object('template_id', 'tpl_' || substr(md5('tpl:' || i), 1, 10),
                          'subject', CASE WHEN channel = 'email' THEN {_pick("cp.sub", [
                              "We miss you, {{first_name}}!", "¡Tu descuento te espera!",
                              "Nur heute: 20 % Rabatt", "Your weekly picks", "お得なお知らせ"])} END,
                          'body', repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ',
                                         1 + {_r("cp.bl", 6)}),
                          'locale', {_pick("cp.l", ["en", "es", "de", "ja", "fr"])}),
       CASE WHEN {_pct("cp.sl", 40)} THEN 1000 * (1 + {_r("cp.slv", 500)}) END,
       CASE WHEN status = 'draft' THEN NULL ELSE {_ts("c + 86400")} END,
       CASE WHEN status IN ('completed', 'cancelled', 'failed')
            THEN {_ts(f"c + 86400 * (2 + {_r('cp.len', 60)})")} END,
       CASE WHEN {_pct("cp.bn", 50)} THEN NULL ELSE {_r("cp.b", 5_000_000)}::numeric / 100 END,
       ({_text_array(_TAGS)})[1 + {_r("cp.t0", 14)}:1 + {_r("cp.t0", 14)} + {_r("cp.tn", 3)}],
       {_ts("c")}, {_ts(f"c + {_r('cp.u', 3_000_000)}")}
FROM (SELECT i, {_created(n["campaigns"], "cp.c")} AS c,
             {_weighted("cp.ch2", [("email", 50), ("push", 25), ("sms", 10), ("in_app", 10), ("webhook", 5)])}
                 AS channel,
             {_weighted("cp.s", campaign_status)} AS status
      FROM generate_series(1, {n["campaigns"]}) AS g(i) OFFSET 0) s"""

    jobs = n["campaign_jobs"]
    job_status = [("succeeded", 86), ("failed", 5), ("cancelled", 5)]
    # The big tables build their jsonb from text: much faster than jsonb_build_object.
    sql["campaign_jobs"] = f"""
INSERT INTO campaign_jobs (id, campaign_id, status, scheduled_for, started_at, finished_at, recipients_count,
                           delivered_count, error_message, result)
SELECT {_uid("campaign_jobs")}, {_ref("campaigns", n["campaigns"], "cj.c", skew=True)}, status,
       {_ts("c")},
       CASE WHEN status IN ('queued', 'cancelled') THEN NULL ELSE {_ts(f"c + {_r('cj.sd', 120)}")} END,
       CASE WHEN status IN ('succeeded', 'failed') THEN {_ts(f"c + 120 + {_r('cj.fd', 3600)}")} END,
       recipients,
       CASE WHEN status = 'succeeded' THEN recipients - recipients * {_r("cj.bounce", 6)} / 100
            WHEN status = 'failed' THEN recipients * {_r("cj.part", 50)} / 100 ELSE 0 END,
       CASE WHEN status = 'failed' THEN {_pick("cj.err", _JOB_ERRORS)} END,
       CASE WHEN status IN ('succeeded', 'failed') THEN
           ('{{"provider": "' || {_pick("cj.p", ["braze", "sendgrid", "onesignal", "twilio"])}
            || '", "batch_id": "' || {_hex("cj.b", 12)}
            || '", "opened": ' || (recipients * {_r("cj.o", 40)} / 100)
            || ', "clicked": ' || (recipients * {_r("cj.cl", 8)} / 100)
            || ', "unsubscribed": ' || {_r("cj.un", 20)}
            || ', "attempt": ' || (1 + {_r("cj.at", 100)} / 90) || '}}')::jsonb END
FROM (SELECT i, {_created(jobs, "cj.t")} AS c,
             CASE WHEN i > {jobs - max(1, jobs // 200)} THEN {_pick("cj.ns", ["queued", "running", "queued"])}
                  ELSE {_weighted("cj.s", job_status)} END AS status,
             CASE WHEN {_pct("cj.big", 3)} THEN 50000 + {_r("cj.rb", 950000)} ELSE 1 + {_r("cj.r", 20000)} END
                 AS recipients
      FROM generate_series(1, {jobs}) AS g(i) OFFSET 0) s"""

    sql["dashboard_tiles"] = f"""
INSERT INTO dashboard_tiles (id, name, tile_type, query_template, default_config, data_source, is_public,
                             created_by, created_at, updated_at)
SELECT {_uid("dashboard_tiles")},
       {_pick("dt.n", ["Daily active users", "Revenue by channel", "Conversion funnel", "Retention D1/D7/D30",
                       "Campaign CTR", "Top segments", "Umsatz pro Land", "売上推移", "Notes"])} || ' v' || i,
       tile_type,
       CASE WHEN tile_type = 'text' THEN NULL ELSE
           'SELECT date_trunc(''{{{{grain}}}}'', event_time) AS bucket, ' || {_pick("dt.m", [
               "count(DISTINCT user_id)", "sum(revenue_usd)", "count(*)", "avg(session_seconds)"])}
           || ' AS value FROM analytics.' || {_pick("dt.t", ["events", "orders", "sessions"])}
           || ' WHERE event_time BETWEEN {{{{start}}}} AND {{{{end}}}} AND country = ANY({{{{countries}}}})'
           || ' GROUP BY 1 ORDER BY 1' END,
       jsonb_build_object('color', {_pick("dt.c", ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])},
                          'grain', {_pick("dt.g", ["day", "week", "month"])},
                          'show_legend', {_pct("dt.l", 70)},
                          'format', {_pick("dt.f", ["number", "currency", "percent"])}),
       {_weighted("dt.ds", [("snowflake", 7), ("amplitude", 2), ("postgres", 1)])},
       {_pct("dt.p", 30)},
       CASE WHEN {_pct("dt.cbn", 10)} THEN NULL ELSE {_ref("team", n["team"], "dt.cb", skew=True)} END,
       {_ts("c")}, {_ts(f"c + {_r('dt.u', 8_000_000)}")}
FROM (SELECT i, {_created(n["dashboard_tiles"], "dt.c")} AS c,
             {_weighted("dt.tt", [("metric", 25), ("line_chart", 25), ("bar_chart", 15), ("table", 15),
                                  ("funnel", 8), ("retention", 7), ("text", 5)])} AS tile_type
      FROM generate_series(1, {n["dashboard_tiles"]}) AS g(i) OFFSET 0) s"""

    sql["dashboard_configurations"] = f"""
INSERT INTO dashboard_configurations (id, name, owner_id, layout, filters, is_default, is_shared,
                                      refresh_interval_seconds, created_at, updated_at)
SELECT {_uid("dashboard_configurations")},
       {_pick("dc.n", ["Executive overview", "Marketing KPIs", "Campaign performance", "Retention",
                       "Panel de ventas", "Wochenbericht", "経営ダッシュボード", ""])} || ' ' || i,
       {_ref("team", n["team"], "dc.o", skew=True)},
       jsonb_build_object('columns', 12, 'row_height', 80, 'theme', {_pick("dc.t", ["light", "dark"])},
                          'compact', {_pct("dc.cp", 20)}),
       jsonb_build_object('date_range', {_pick("dc.dr", ["last_7_days", "last_30_days", "quarter_to_date"])},
                          'countries', to_jsonb(ARRAY[{_pick("dc.c1", _COUNTRIES)},
                                                      {_pick("dc.c2", _COUNTRIES)}])),
       {_pct("dc.d", 10)}, {_pct("dc.s", 45)},
       CASE WHEN {_pct("dc.rn", 30)} THEN NULL ELSE (ARRAY[60, 300, 900, 3600])[1 + {_r("dc.r", 4)}] END,
       {_ts("c")}, {_ts(f"c + {_r('dc.u', 6_000_000)}")}
FROM (SELECT i, {_created(n["dashboard_configurations"], "dc.c")} AS c
      FROM generate_series(1, {n["dashboard_configurations"]}) AS g(i) OFFSET 0) s"""

    sql["dashboard_tile_instances"] = f"""
INSERT INTO dashboard_tile_instances (id, dashboard_id, tile_id, title, position_x, position_y, width, height,
                                      config_overrides, cached_result, cache_expires_at, last_error,
                                      is_visible, created_at, updated_at)
SELECT {_uid("dashboard_tile_instances")},
       {_ref("dashboard_configurations", n["dashboard_configurations"], "ti.d", skew=True)},
       {_ref("dashboard_tiles", n["dashboard_tiles"], "ti.t", skew=True)},
       CASE {_r("ti.tn", 5)} WHEN 0 THEN NULL WHEN 1 THEN ''
            ELSE {_pick("ti.ti", ["DAU", "Revenue (USD)", "Ingresos", "Umsatz", "売上", "CTR %"])} END,
       ({_r("ti.x", 3)}) * 4, {_r("ti.y", 8)} * 3, (ARRAY[3, 4, 6, 12])[1 + {_r("ti.w", 4)}],
       2 + {_r("ti.h", 4)},
       CASE WHEN {_pct("ti.co", 60)} THEN '{{}}'::jsonb
            ELSE jsonb_build_object('color', {_pick("ti.c", ["#9467bd", "#8c564b", "#e377c2"])},
                                    'comparison',
                                    {_pick("ti.cmp", ["previous_period", "previous_year"])}) END,
       CASE WHEN cached THEN jsonb_build_object(
                'columns', jsonb_build_array('bucket', 'value'),
                'rows', (SELECT jsonb_agg(jsonb_build_array(
                                     '2025-0' || (1 + k % 6) || '-' || lpad((1 + k)::text, 2, '0'),
                                     {_r("ti.v", 100000, "i * 64 + k")}))
                         FROM generate_series(0, 4 + {_r("ti.nr", 20)}) AS k),
                'query_ms', {_r("ti.q", 9000)}, 'bytes_scanned', {_r("ti.bs", 200_000_000)}) END,
       CASE WHEN cached THEN {_ts(f"c + 3600 + {_r('ti.ce', 86400)}")} END,
       CASE WHEN NOT cached AND {_pct("ti.e", 20)}
            THEN {_pick("ti.em", _REPORT_ERRORS[:2] + _REPORT_ERRORS[5:6])} END,
       NOT {_pct("ti.vis", 5)},
       {_ts("c")}, {_ts(f"c + {_r('ti.u', 4_000_000)}")}
FROM (SELECT i, {_created(n["dashboard_tile_instances"], "ti.c")} AS c, {_pct("ti.cached", 70)} AS cached
      FROM generate_series(1, {n["dashboard_tile_instances"]}) AS g(i) OFFSET 0) s"""

    image_types = [("image/png", 55), ("image/jpeg", 30), ("image/svg+xml", 8), ("image/gif", 4),
                   ("image/webp", 3)]
    magic = ("CASE ct WHEN 'image/png' THEN decode('89504e470d0a1a0a0000000d49484452', 'hex') "
             "WHEN 'image/jpeg' THEN decode('ffd8ffe000104a46494600010100', 'hex') "
             "WHEN 'image/gif' THEN convert_to('GIF89a', 'UTF8') "
             "ELSE convert_to('RIFF', 'UTF8') || decode('00000000', 'hex') "
             "|| convert_to('WEBPVP8 ', 'UTF8') END")
    sql["uploaded_images"] = f"""
INSERT INTO uploaded_images (id, filename, content_type, byte_size, data, sha256, uploaded_by, created_at)
SELECT {_uid("uploaded_images")},
       {_pick("im.n", ["logo", "Q3 revenue chart", "cover", "team-photo", "Präsentation_Titelbild",
                       "報告書の表紙", "screenshot 2024-05-01", "hero@2x"])}
           || '-' || i || CASE ct WHEN 'image/png' THEN '.png' WHEN 'image/jpeg' THEN '.jpg'
                                  WHEN 'image/gif' THEN '.gif' WHEN 'image/webp' THEN '.webp' ELSE '.svg' END,
       ct, octet_length(data), data, encode(digest(data, 'sha256'), 'hex'),
       CASE WHEN {_pct("im.ubn", 10)} THEN NULL ELSE {_ref("team", n["team"], "im.ub", skew=True)} END,
       {_ts("c")}
FROM (SELECT i, c, ct,
             CASE WHEN ct = 'image/svg+xml' THEN convert_to(
                      '<svg xmlns="http://www.w3.org/2000/svg" width="' || (100 + i % 900) || '" height="'
                      || (100 + i % 500) || '"><rect width="100%" height="100%" fill="#'
                     || substr(md5('svg:' || i), 1, 6)
                      || '"/><text x="10" y="40">Résumé № ' || i || '</text></svg>', 'UTF8')
                  ELSE {magic} || encrypt(convert_to(repeat('x', size), 'UTF8'),
                                         decode(md5('img:' || i), 'hex'), 'aes')
             END AS data
      FROM (SELECT i, {_created(n["uploaded_images"], "im.c")} AS c, {_weighted("im.ct", image_types)} AS ct,
                   CASE WHEN {_pct("im.big", 8)} THEN 40000 + {_r("im.sb", 160000)}
                        ELSE 1500 + {_r("im.s", 18000)} END
                       AS size
            FROM generate_series(1, {n["uploaded_images"]}) AS g(i) OFFSET 0) s0
      OFFSET 0) s"""

    sql["presentations"] = f"""
INSERT INTO presentations (id, title, description, cover_image_id, created_by, theme, is_template,
                           created_at, updated_at)
SELECT {_uid("presentations")},
       {_pick("p.t", ["Weekly business review", "Campaign results", "Board deck", "Informe mensual",
                      "Quartalsbericht", "月次レポート", "Cohort deep-dive"])} || ' ' || i,
       CASE {_r("p.dn", 6)} WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Auto-generated deck for '
            || {_pick("p.d", _DEPARTMENTS)} END,
       CASE WHEN {_pct("p.cin", 40)} THEN NULL
            ELSE {_ref("uploaded_images", n["uploaded_images"], "p.ci")} END,
       CASE WHEN {_pct("p.cbn", 5)} THEN NULL ELSE {_ref("team", n["team"], "p.cb", skew=True)} END,
       jsonb_build_object('font', {_pick("p.f", ["Inter", "Roboto", "Noto Sans JP"])},
                          'primary_color', '#' || substr(md5('color:' || i), 1, 6),
                          'logo_position', {_pick("p.lp", ["top-left", "bottom-right"])}),
       {_pct("p.tpl", 8)},
       {_ts("c")}, {_ts(f"c + {_r('p.u', 5_000_000)}")}
FROM (SELECT i, {_created(n["presentations"], "p.c")} AS c
      FROM generate_series(1, {n["presentations"]}) AS g(i) OFFSET 0) s"""

    pres = n["presentations"]
    sql["slides"] = f"""
INSERT INTO slides (id, presentation_id, position, title, layout, content, image_id, speaker_notes,
                    created_at)
SELECT {_uid("slides")}, {_uid("presentations", f"1 + (i - 1) % {pres}")}, (i - 1) / {pres},
       CASE WHEN {_pct("sl.tn", 10)} THEN NULL
            ELSE {_pick("sl.t", ["Highlights", "KPIs", "Revenue", "Next steps", "Résumé", "Zusammenfassung",
                                  "まとめ", "Appendix"])} END,
       layout,
       jsonb_build_object('blocks', jsonb_build_array(
           jsonb_build_object('type', 'heading', 'text', 'Section ' || ((i - 1) / {pres} + 1)),
           jsonb_build_object('type', 'paragraph',
                              'text', repeat('Key insight: conversion improved week over week. ',
                                             1 + {_r("sl.p", 5)})),
           jsonb_build_object('type', 'metric',
                              'tile', {_ref("dashboard_tiles", n["dashboard_tiles"], "sl.tile")},
                              'value', {_r("sl.v", 1000000)}))),
       CASE WHEN layout = 'image' OR {_pct("sl.im", 15)}
            THEN {_ref("uploaded_images", n["uploaded_images"], "sl.i")} END,
       CASE {_r("sl.sn", 5)} WHEN 0 THEN NULL WHEN 1 THEN ''
            ELSE {_pick("sl.n", ["Mention the holiday effect.", "Pausa para preguntas.",
                                  "Hier auf die Kohorten eingehen.", "質疑応答の時間を取る。"])} END,
       {_ts(f"{_SPAN_SECONDS // 2} + i::bigint * {max(1, _SPAN_SECONDS // 2 // max(1, n['slides']))}")}
FROM (SELECT i, CASE WHEN (i - 1) / {pres} = 0 THEN 'title'
                     ELSE {_weighted("sl.l", [("content", 40), ("chart", 35), ("image", 10),
                                              ("two_column", 15)])}
                END AS layout
      FROM generate_series(1, {n["slides"]}) AS g(i) OFFSET 0) s"""

    sql["mailing_lists"] = f"""
INSERT INTO mailing_lists (id, name, description, owner_id, emails, provider, external_list_id, is_active,
                           subscriber_count, created_at, updated_at)
SELECT {_uid("mailing_lists")},
       {_pick("ml.n", ["Leadership", "Marketing team", "Regional managers", "Équipe France", "Vertrieb DACH",
                       "日本チーム", "Board", "Analysts"])} || ' ' || i,
       CASE {_r("ml.dn", 5)} WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Recipients of the ' || lower({_pick(
           "ml.d", _DEPARTMENTS)}) || ' reports' END,
       CASE WHEN {_pct("ml.on", 8)} THEN NULL ELSE {_ref("team", n["team"], "ml.o", skew=True)} END,
       ARRAY(SELECT {_pick("ml.ef", first_ascii, "i * 64 + k")} || '.' || k || '@acme-cdp.example'
             FROM generate_series(1, {_r("ml.ne", 20)}) AS k),
       provider,
       CASE WHEN provider <> 'internal' THEN provider || '_' || substr(md5('list:' || i), 1, 10) END,
       NOT {_pct("ml.a", 10)}, {_r("ml.sc", 5000)},
       {_ts("c")}, {_ts(f"c + {_r('ml.u', 5_000_000)}")}
FROM (SELECT i, {_created(n["mailing_lists"], "ml.c")} AS c,
             {_weighted("ml.p", [("internal", 60), ("braze", 15), ("sendgrid", 15), ("mailchimp", 10)])}
                 AS provider
      FROM generate_series(1, {n["mailing_lists"]}) AS g(i) OFFSET 0) s"""

    report_status = [("active", 70), ("paused", 15), ("disabled", 10), ("error", 5)]
    sql["scheduled_reports"] = f"""
INSERT INTO scheduled_reports (id, name, description, presentation_id, created_by, mailing_list_id,
                               schedule_cron, timezone, format, status, recipients, cc_recipients,
                               subject_template, body_template, filters, parameters, include_attachments,
                               attachment_max_mb, last_run_at, next_run_at, last_status, consecutive_failures,
                               retry_policy, snowflake_warehouse, created_at, updated_at)
SELECT {_uid("scheduled_reports")},
       {_pick("sr.n", ["Weekly KPI digest", "Monthly revenue", "Campaign recap", "Reporte semanal",
                       "Wöchentlicher Bericht", "週次レポート"])} || ' #' || i,
       CASE {_r("sr.dn", 6)} WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Sent to stakeholders every cycle' END,
       {_ref("presentations", pres, "sr.p")},
       CASE WHEN {_pct("sr.cbn", 5)} THEN NULL ELSE {_ref("team", n["team"], "sr.cb", skew=True)} END,
       CASE WHEN {_pct("sr.mln", 35)} THEN NULL ELSE {_ref("mailing_lists", n["mailing_lists"], "sr.ml")} END,
       {_pick("sr.cron", _CRON)}, {_pick("sr.tz", _TIMEZONES)},
       {_weighted("sr.f", [("pdf", 60), ("csv", 15), ("xlsx", 12), ("html", 8), ("png", 5)])},
       status,
       ARRAY(SELECT 'report-' || k || '@' || {_pick("sr.rd", _DOMAINS, "i * 64 + k")}
             FROM generate_series(1, {_r("sr.nr", 6)}) AS k),
       CASE WHEN {_pct("sr.cc", 30)} THEN {_text_array(["cfo@acme-retail.com", "ops@acme-retail.com"])} END,
       CASE WHEN {_pct("sr.st", 10)} THEN NULL ELSE '[{{{{report_name}}}}] ' ||
            {_pick("sr.sub", ["Weekly digest for {{date}}", "Resumen del {{date}}",
                              "Bericht vom {{date}}", "{{date}} のレポート"])} END,
       CASE WHEN {_pct("sr.bt", 20)} THEN NULL
            ELSE 'Hello,' || chr(10) || chr(10) || 'please find attached the latest report.' || chr(10)
                 || '— CDP'
       END,
       jsonb_build_object('date_range', {_pick("sr.dr", ["last_7_days", "last_month", "quarter_to_date"])},
                          'countries', to_jsonb(ARRAY[{_pick("sr.c", _COUNTRIES)}])),
       jsonb_build_object('currency', {_pick("sr.cur", ["USD", "EUR", "JPY", "MXN"])},
                          'include_charts', {_pct("sr.ic", 80)}, 'page_size', 'A4'),
       NOT {_pct("sr.ia", 15)},
       CASE WHEN {_pct("sr.amn", 30)} THEN NULL ELSE 5 * (1 + {_r("sr.am", 10)}) END,
       CASE WHEN status = 'disabled' AND {_pct("sr.lrn", 50)} THEN NULL
            ELSE {_ts("74000000 + " + _r("sr.lr", 3_000_000))} END,
       CASE WHEN status = 'active' THEN {_ts("77000000 + " + _r("sr.nx", 1_000_000))} END,
       CASE WHEN status = 'error' THEN {_pick("sr.lse", ["failed", "timeout"])}
            WHEN status = 'disabled' THEN NULL ELSE 'succeeded' END,
       CASE WHEN status = 'error' THEN 1 + {_r("sr.cf", 5)} ELSE 0 END,
       CASE WHEN {_pct("sr.rpn", 40)} THEN NULL
            ELSE jsonb_build_object('max_attempts', 3, 'backoff_seconds', to_jsonb(ARRAY[60, 300, 900])) END,
       CASE WHEN {_pct("sr.wn", 20)} THEN NULL ELSE {_pick("sr.w", _SNOWFLAKE_WAREHOUSES)} END,
       {_ts("c")}, {_ts(f"c + {_r('sr.u', 5_000_000)}")}
FROM (SELECT i, {_created(n["scheduled_reports"], "sr.c")} AS c, {_weighted("sr.s", report_status)} AS status
      FROM generate_series(1, {n["scheduled_reports"]}) AS g(i) OFFSET 0) s"""

    runs = n["report_executions"]
    exec_status = [("succeeded", 90), ("failed", 6), ("timeout", 2), ("cancelled", 2)]
    reports = n["scheduled_reports"]
    sql["report_executions"] = f"""
INSERT INTO report_executions (id, scheduled_report_id, status, triggered_by, started_at, finished_at,
                               duration_ms, row_count, output_url, output_size_bytes, error_message, metadata)
SELECT {_uid("report_executions")}, {_uid("scheduled_reports", "rep")}, status,
       {_weighted("re.tb", [("schedule", 85), ("manual", 8), ("retry", 5), ("api", 2)])},
       {_ts("c")},
       CASE WHEN status IN ('queued', 'running') THEN NULL ELSE {_ts("c")} + d * interval '1 millisecond' END,
       CASE WHEN status IN ('queued', 'running') THEN NULL ELSE d END,
       CASE WHEN status = 'succeeded' THEN {_r("re.rc", 2_000_000)} END,
       CASE WHEN status = 'succeeded' THEN
           's3://acme-cdp-reports/' || to_char({_BASE_NAIVE} + c * interval '1 second', 'YYYY/MM/DD')
           || '/r' || rep || '-' || {_hex("re.url", 12)} || '.pdf' END,
       CASE WHEN status = 'succeeded' THEN 20000 + {_r("re.os", 8_000_000)} END,
       CASE WHEN status IN ('failed', 'timeout') THEN {_pick("re.err", _REPORT_ERRORS)} END,
       ('{{"query_id": "01b' || {_hex("re.q", 15)}
        || '", "warehouse": "' || {_pick("re.wh", _SNOWFLAKE_WAREHOUSES)}
        || '", "bytes_scanned": ' || {_r("re.bs", 250_000_000)} || ', "cache_hit": '
        || CASE WHEN {_pct("re.ch", 35)} THEN 'true' ELSE 'false' END
        || ', "pages": ' || (1 + {_r("re.pg", 40)}) || '}}')::jsonb
FROM (SELECT i, 1 + ({_r("re.ra", reports)}::bigint * {_r("re.rb", reports)}) / {reports} AS rep,
             {_created(runs, "re.t")} AS c,
             CASE WHEN i > {runs - max(1, runs // 500)} THEN {_pick("re.ns", ["queued", "running"])}
                  ELSE {_weighted("re.s", exec_status)} END AS status,
             500 + {_r("re.d", 300_000)} AS d
      FROM generate_series(1, {runs}) AS g(i) OFFSET 0) s"""

    env_keys = {
        "snowflake": ("warehouse", "'CDP_' || upper(env) || '_WH'", False),
        "amplitude": ("api_endpoint", "'https://api2.amplitude.com/' || env", False),
        "braze": ("rest_endpoint", "'https://rest.iad-0' || (1 + i % 5) || '.braze.com'", False),
        "sendgrid": ("from_address", "'reports+' || env || '@acme-cdp.example'", False),
        "slack": ("default_channel", "'#cdp-alerts-' || env", False),
        "s3": ("bucket", "'acme-cdp-' || env || '-exports'", False),
        "salesforce": ("instance_url",
                       "CASE WHEN env = 'production' THEN 'https://acme.my.salesforce.com' "
                       "ELSE 'https://acme--' || env || '.sandbox.my.salesforce.com' END", False),
        "segment": ("write_key", "'wk_' || substr(md5('wk:' || i), 1, 24)", True),
    }
    key_case = " ".join(f"WHEN '{p}' THEN '{k}'" for p, (k, _, _) in env_keys.items())
    value_case = " ".join(f"WHEN '{p}' THEN {v}" for p, (_, v, _) in env_keys.items())
    secret_case = " ".join(f"WHEN '{p}' THEN {_lit(s)}" for p, (_, _, s) in env_keys.items())
    sql["environment_configurations"] = f"""
INSERT INTO environment_configurations (id, integration_id, environment, key, value, is_secret,
                                        created_at, updated_at)
SELECT {_uid("environment_configurations")}, {_uid("integrations", "integration")}, env,
       CASE provider {key_case} END,
       CASE WHEN i % 17 = 0 THEN '' ELSE CASE provider {value_case} END END,
       CASE provider {secret_case} END,
       {_ts("integration * 86400 + i * 600")}, {_ts("60000000 + i * 3600")}
FROM (SELECT i, 1 + (i - 1) / 3 AS integration,
             ({_text_array(["development", "staging", "production"])})[1 + (i - 1) % 3] AS env,
             ({_text_array(providers)})[1 + ((i - 1) / 3) % 8] AS provider
      FROM generate_series(1, {n["environment_configurations"]}) AS g(i)) s"""

    mh = n["migration_history"]
    mh_status = [("succeeded", 85), ("failed", 7), ("rolled_back", 5)]
    sql["migration_history"] = f"""
INSERT INTO migration_history (id, integration_id, migration_name, version, direction,
                               source_environment, target_environment, status, started_at, finished_at,
                               duration_ms, rows_migrated, checksum, executed_by, error_message, log, details,
                               created_at)
SELECT i, CASE WHEN {_pct("mh.in", 40)} THEN NULL ELSE {_ref("integrations", n["integrations"], "mh.i")} END,
       version || '_' || {_pick("mh.n", ["add_cohort_sync_columns", "create_report_executions",
                                         "backfill_segment_rules", "add_idx_campaign_jobs_status",
                                         "encrypt_integration_credentials", "split_dashboard_layout",
                                         "migrate_staging_to_production"])},
       version,
       CASE WHEN {_pct("mh.d", 5)} THEN 'down' ELSE 'up' END,
       src, CASE src WHEN 'development' THEN 'staging' WHEN 'staging' THEN 'production' ELSE 'production' END,
       status,
       CASE WHEN status = 'pending' THEN NULL ELSE {_ts("c")} END,
       CASE WHEN status IN ('pending', 'running') THEN NULL
            ELSE {_ts("c")} + d * interval '1 millisecond' END,
       CASE WHEN status IN ('pending', 'running') THEN NULL ELSE d END,
       CASE WHEN status = 'succeeded' THEN {_r("mh.rm", 5_000_000)} END,
       md5('migration:' || i),
       {_pick("mh.by", ["ci-deploy", "ansible@bastion-01", "jose.garcia@acme-cdp.example", "",
                        "release-bot"])},
       CASE WHEN status IN ('failed', 'rolled_back') THEN {_pick("mh.err", _MIGRATION_ERRORS)} END,
       CASE WHEN {_pct("mh.ln", 10)} THEN NULL ELSE
           (SELECT string_agg(to_char({_BASE_NAIVE} + (c + k) * interval '1 second',
                                      'YYYY-MM-DD"T"HH24:MI:SS')
                              || ' INFO step ' || k || ': copied ' || {_r("mh.lr", 100000, "i * 64 + k")}
                              || ' rows', chr(10) ORDER BY k)
            FROM generate_series(1, 3 + {_r("mh.lc", 40)}) AS k) END,
       jsonb_build_object('tool', 'pgmigrate', 'tool_version', '0.' || (1 + i % 9), 'tables',
                          1 + {_r("mh.t", 21)}, 'dry_run', {_pct("mh.dr", 10)}),
       {_ts("c")}
FROM (SELECT i, {_created(mh, "mh.c")} AS c,
             to_char({_BASE_NAIVE} + {_created(mh, "mh.c")} * interval '1 second', 'YYYYMMDDHH24MISS')
                 AS version,
             {_pick("mh.src", ["development", "staging", "production"])} AS src,
             CASE WHEN i = {mh} THEN 'running' WHEN i = {mh} - 1 THEN 'pending'
                  ELSE {_weighted("mh.s", mh_status)} END AS status,
             100 + {_r("mh.d", 3_600_000)} AS d
      FROM generate_series(1, {mh}) AS g(i) OFFSET 0) s"""

    assert set(sql) == set(TABLES), set(TABLES) ^ set(sql)
    return sql


_SEQUENCES_SQL = """
SELECT setval(pg_get_serial_sequence('role_permissions', 'id'), (SELECT max(id) FROM role_permissions));
SELECT setval(pg_get_serial_sequence('migration_history', 'id'), (SELECT max(id) FROM migration_history));
"""


# --- loading ---------------------------------------------------------------------------------------------


def _connect(conn_params: dict):
    keys = ("host", "port", "user", "password", "dbname")
    return psycopg2.connect(**{k: conn_params[k] for k in keys if conn_params.get(k) is not None})


def existing_tables(cur) -> list:
    """The CDP tables present in the public schema, in load order."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (list(TABLES),),
    )
    present = {row[0] for row in cur.fetchall()}
    return [t for t in TABLES if t in present]


def inspect(conn_params: dict) -> dict:
    """What the database holds: {'tables': [present CDP tables], 'counts': {probe table: rows}}."""
    conn = _connect(conn_params)
    try:
        with conn.cursor() as cur:
            tables = existing_tables(cur)
            counts = {}
            for table in SCALE_PROBE_TABLES:
                if table in tables:
                    cur.execute(f'SELECT count(*) FROM public."{table}"')
                    counts[table] = cur.fetchone()[0]
        conn.rollback()
        return {"tables": tables, "counts": counts}
    finally:
        conn.close()


def load(conn_params: dict, scale: float, drop_existing: bool = False,
         progress: Callable[[str], None] | None = None) -> dict:
    """Create the schema and load the data at `scale` into the database of conn_params.

    Everything happens in one transaction. If any CDP table exists already, raises
    TablesExistError unless drop_existing (then the 21 tables are dropped first).
    Returns {'scale', 'row_counts': {table: rows}, 'table_seconds': {table: s}, 'seconds',
    'data_bytes' (sum of pg_total_relation_size of the 21 tables), 'database_bytes'}.
    """
    counts = expected_row_counts(scale)
    statements = _table_sql(counts)
    schema = SCHEMA_FILE.read_text(encoding="utf-8")
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    row_counts, table_seconds = {}, {}
    conn = _connect(conn_params)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL TimeZone = 'UTC'")
            cur.execute("SET LOCAL work_mem = '64MB'")
            present = existing_tables(cur)
            if present:
                if not drop_existing:
                    raise TablesExistError(
                        f"{len(present)} of the CDP tables exist already ({', '.join(present[:5])}...): "
                        "pass drop_existing=True (CLI: --drop) to replace them")
                say(f"dropping {len(present)} existing CDP tables")
                cur.execute("DROP TABLE IF EXISTS " + ", ".join(f'public."{t}"' for t in TABLES) + " CASCADE")
            t0 = time.monotonic()
            cur.execute(schema)
            say(f"schema: {len(TABLES)} tables created in {time.monotonic() - t0:.2f}s")
            for table in TABLES:
                t0 = time.monotonic()
                cur.execute(statements[table])
                if cur.rowcount != counts[table]:
                    raise RuntimeError(f"{table}: inserted {cur.rowcount} rows, expected {counts[table]}")
                row_counts[table] = cur.rowcount
                table_seconds[table] = round(time.monotonic() - t0, 3)
                say(f"{table}: {cur.rowcount} rows in {table_seconds[table]:.2f}s")
            cur.execute(_SEQUENCES_SQL)
            t0 = time.monotonic()
            cur.execute("ANALYZE " + ", ".join(f'public."{t}"' for t in TABLES))
            say(f"analyze: {time.monotonic() - t0:.2f}s")
        with conn.cursor() as cur:
            cur.execute("SELECT sum(pg_total_relation_size(format('public.%%I', t)::regclass))::bigint, "
                        "pg_database_size(current_database()) FROM unnest(%s::text[]) AS t", (list(TABLES),))
            data_bytes, database_bytes = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    seconds = round(time.monotonic() - started, 3)
    say(f"loaded scale {scale:g}: {sum(row_counts.values())} rows, "
        f"{data_bytes / 1e6:.1f} MB of tables+indexes (database {database_bytes / 1e6:.1f} MB) "
        f"in {seconds:.2f}s")
    return {"scale": float(scale), "row_counts": row_counts, "table_seconds": table_seconds,
            "seconds": seconds, "data_bytes": data_bytes, "database_bytes": database_bytes}


# --- CLI -------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cdp_reference.generate", allow_abbrev=False,
        description="Create the CDP reference schema and load deterministic data at a scale factor "
                    "(scale 1 is about 100 MB). Idempotent: does nothing when that scale is loaded already.")
    parser.add_argument("--host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--user", default=os.environ.get("PGUSER", "postgres"))
    parser.add_argument("--password-file",
                        help="file holding the password (else PGPASSWORD / .pgpass); never pass it on argv")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--drop", action="store_true",
                        help="drop the CDP tables first when they exist with other row counts "
                             "(when the requested scale is loaded already, nothing is done anyway)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not args.scale > 0:
        print(f"error: --scale must be > 0, got {args.scale}", file=sys.stderr)
        return 2
    password = None
    if args.password_file:
        try:
            password = pathlib.Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"error: cannot read the password file {args.password_file}: {exc.strerror}",
                  file=sys.stderr)
            return 2
    elif os.environ.get("PGPASSWORD"):
        password = os.environ["PGPASSWORD"]
    params = {"host": args.host, "port": args.port, "user": args.user, "dbname": args.dbname,
              "password": password}
    where = f"database {args.dbname} on {args.host}:{args.port}"
    expected = expected_row_counts(args.scale)
    try:
        state = inspect(params)
        tables, counts = state["tables"], state["counts"]
        if len(tables) == len(TABLES) and all(counts[t] == expected[t] for t in SCALE_PROBE_TABLES):
            print(f"already loaded at scale {args.scale:g}: {where} has the {len(TABLES)} CDP tables with "
                  + ", ".join(f"{t}={counts[t]}" for t in SCALE_PROBE_TABLES) + "; nothing to do")
            return 0
        if tables and not args.drop:
            found = ", ".join(f"{t}={counts[t]}" for t in SCALE_PROBE_TABLES if t in counts)
            found = found or "no probe tables"
            want = ", ".join(f"{t}={expected[t]}" for t in SCALE_PROBE_TABLES)
            hint = ""
            if "report_executions" in counts and counts["report_executions"] > 0:
                guess = counts["report_executions"] / _SCALED_ROWS["report_executions"][0]
                hint = f" (the rows look like scale ~{guess:.3g})"
            print(f"error: {where} already has {len(tables)} of the {len(TABLES)} CDP tables, with {found}, "
                  f"which is not scale {args.scale:g} ({want}){hint}.\n"
                  f"Rerun with --drop to drop and reload them at scale {args.scale:g}, "
                  "or pass the --scale they were loaded at, or use another --dbname.", file=sys.stderr)
            return 2
        print(f"loading the CDP reference data at scale {args.scale:g} into {where} as {args.user}")
        load(params, args.scale, drop_existing=args.drop, progress=lambda msg: print(msg, flush=True))
        return 0
    except psycopg2.Error as exc:
        message = (getattr(exc, "pgerror", None) or str(exc)).strip()
        print(f"error: {where}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
