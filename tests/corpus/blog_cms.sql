-- corpus: blog_cms -- a blog / CMS as a web framework's migrations leave it.
-- roles: corpus_blog_author corpus_blog_reader
--
-- Several schemas, two with quoted mixed-case names; foreign keys across schemas; an extension in a
-- schema of its own (citext and pg_trgm in "extensions", used by columns and a trigram index);
-- functions and triggers outside public; views and a materialized view; large objects (the media
-- library keeps uploads as large objects referenced by an oid column, with a comment, an owner and a
-- grant); a self-referencing comment tree.

SET client_min_messages = warning;
SET TIME ZONE 'UTC';

CREATE SCHEMA extensions;
CREATE EXTENSION citext WITH SCHEMA extensions;
CREATE EXTENSION pg_trgm WITH SCHEMA extensions;

CREATE SCHEMA auth;
CREATE SCHEMA "Content";
CREATE SCHEMA "Media Library";
CREATE SCHEMA search;

CREATE TYPE "Content".post_status AS ENUM ('draft', 'review', 'published', 'archived');

CREATE TABLE auth.users (
    id bigserial PRIMARY KEY,
    email extensions.citext NOT NULL UNIQUE,
    "displayName" varchar(80) NOT NULL,
    password_digest text NOT NULL,
    is_staff boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
COMMENT ON TABLE auth.users IS 'People who can log in to the admin';
COMMENT ON COLUMN auth.users."displayName" IS 'Shown as the author of posts';

CREATE TABLE auth.sessions (
    token char(40) PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    data jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE "Media Library"."Assets" (
    "AssetID" serial PRIMARY KEY,
    "FileName" text NOT NULL,
    "MimeType" text NOT NULL DEFAULT 'application/octet-stream',
    "Content" oid,
    uploaded_by bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    "ByteSize" integer NOT NULL CHECK ("ByteSize" >= 0)
);

CREATE TABLE "Content"."Posts" (
    "PostID" bigserial PRIMARY KEY,
    author_id bigint NOT NULL REFERENCES auth.users (id),
    title text NOT NULL,
    slug text NOT NULL UNIQUE,
    body text NOT NULL DEFAULT '',
    status "Content".post_status NOT NULL DEFAULT 'draft',
    "publishedAt" timestamptz,
    hero_asset integer REFERENCES "Media Library"."Assets" ("AssetID"),
    search_vector tsvector,
    CONSTRAINT published_has_date CHECK (status <> 'published' OR "publishedAt" IS NOT NULL)
);
CREATE INDEX "Posts_title_trgm" ON "Content"."Posts" USING gin (title extensions.gin_trgm_ops);
CREATE INDEX "Posts_search" ON "Content"."Posts" USING gin (search_vector);
CREATE INDEX "Posts_published" ON "Content"."Posts" ("publishedAt" DESC) WHERE status = 'published';

CREATE TABLE "Content".comments (
    id bigserial PRIMARY KEY,
    post_id bigint NOT NULL REFERENCES "Content"."Posts" ("PostID") ON DELETE CASCADE,
    parent_id bigint REFERENCES "Content".comments (id),
    author_email extensions.citext NOT NULL,
    body text NOT NULL,
    approved boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);

CREATE TABLE "Content".tags (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE "Content".post_tags (
    post_id bigint NOT NULL REFERENCES "Content"."Posts" ("PostID") ON DELETE CASCADE,
    tag_id integer NOT NULL REFERENCES "Content".tags (id) ON DELETE CASCADE,
    PRIMARY KEY (post_id, tag_id)
);

-- The framework's migration bookkeeping: a keyless table.
CREATE TABLE public.schema_migrations (version varchar(14) NOT NULL, applied_at timestamptz);

-- Functions and triggers outside public.
CREATE FUNCTION search.slugify(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT trim(both '-' from regexp_replace(lower(value), '[^a-z0-9]+', '-', 'g')) $$;

CREATE FUNCTION search.posts_before_write() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.search_vector := to_tsvector('english', coalesce(NEW.title, '') || ' ' || coalesce(NEW.body, ''));
    IF NEW.slug IS NULL OR NEW.slug = '' THEN
        NEW.slug := search.slugify(NEW.title);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER posts_before_write BEFORE INSERT OR UPDATE ON "Content"."Posts"
    FOR EACH ROW EXECUTE FUNCTION search.posts_before_write();

CREATE FUNCTION "Content".reject_spam() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.body ILIKE '%viagra%' THEN
        RAISE EXCEPTION 'spam comment rejected';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER "Reject Spam" BEFORE INSERT ON "Content".comments
    FOR EACH ROW EXECUTE FUNCTION "Content".reject_spam();

-- Data.
INSERT INTO auth.users (email, "displayName", password_digest, is_staff, created_at, last_login_at)
SELECT 'Author' || g || '@Example.org', 'Author ' || g, '$2b$12$' || md5(g::text), g = 1,
       timestamptz '2021-01-01' + g * interval '1 day', CASE WHEN g % 3 = 0 THEN NULL
       ELSE timestamptz '2024-06-01 10:00' + g * interval '1 hour' END
FROM generate_series(1, 12) AS g;

INSERT INTO auth.sessions
SELECT md5('s' || g) || 'abcdefgh', g % 12 + 1, timestamptz '2030-01-01' + g * interval '1 minute',
       jsonb_build_object('csrf', md5(g::text), 'flash', CASE WHEN g % 2 = 0 THEN 'saved' END)
FROM generate_series(1, 30) AS g;

-- Uploads: five large objects with fixed oids, one empty, one of 300 kB.
SELECT lo_from_bytea(910001, convert_to('GIF89a fake image one', 'UTF8'));
SELECT lo_from_bytea(910002, decode(repeat('89504e470d0a1a0a', 4000), 'hex'));
SELECT lo_from_bytea(910003, ''::bytea);
SELECT lo_from_bytea(910004, convert_to(repeat('%PDF-1.4 page ', 21000), 'UTF8'));
SELECT lo_from_bytea(910005, decode(md5('five') || md5('5'), 'hex'));
COMMENT ON LARGE OBJECT 910001 IS 'Logo, first version';
COMMENT ON LARGE OBJECT 910004 IS 'Terms of service (PDF)';
ALTER LARGE OBJECT 910002 OWNER TO corpus_blog_author;
ALTER LARGE OBJECT 910004 OWNER TO corpus_blog_author;
GRANT SELECT ON LARGE OBJECT 910001, 910004 TO corpus_blog_reader;
GRANT SELECT, UPDATE ON LARGE OBJECT 910002 TO corpus_blog_reader;

INSERT INTO "Media Library"."Assets" ("FileName", "MimeType", "Content", uploaded_by, "ByteSize") VALUES
    ('logo.gif', 'image/gif', 910001, 1, 21),
    ('banner.png', 'image/png', 910002, 2, 32000),
    ('empty.txt', 'text/plain', 910003, NULL, 0),
    ('terms.pdf', 'application/pdf', 910004, 1, 294000),
    ('key.bin', DEFAULT, 910005, 3, 32),
    ('missing.jpg', 'image/jpeg', NULL, 4, 0);

INSERT INTO "Content"."Posts" (author_id, title, slug, body, status, "publishedAt", hero_asset)
SELECT g % 12 + 1, 'Post number ' || g || CASE WHEN g % 5 = 0 THEN ' — ünïcødé' ELSE '' END,
       CASE WHEN g % 4 = 0 THEN '' ELSE 'post-' || g END,
       repeat('Lorem ipsum dolor sit amet. ', g % 40 + 1) || E'\nSecond line\twith a tab',
       (ARRAY['draft', 'review', 'published', 'archived'])[g % 4 + 1]::"Content".post_status,
       CASE WHEN g % 4 IN (1, 2, 3) THEN timestamptz '2023-03-01' + g * interval '7 hours' END,
       CASE WHEN g % 7 = 0 THEN g % 5 + 1 END
FROM generate_series(1, 200) AS g;

INSERT INTO "Content".tags (name) SELECT 'tag-' || g FROM generate_series(1, 25) AS g;
INSERT INTO "Content".post_tags SELECT p, (p * 7 + k) % 25 + 1
FROM generate_series(1, 200) AS p, generate_series(0, 2) AS k;

-- Replies whose parent has a higher id (loaded in id order, a reply would precede its parent).
INSERT INTO "Content".comments (id, post_id, parent_id, author_email, body, approved, created_at)
SELECT g, g % 200 + 1, NULL, 'Reader' || g || '@Mail.test', 'Nice post ' || g, g % 3 = 0,
       timestamptz '2024-01-01' + g * interval '13 minutes'
FROM generate_series(1, 300) AS g;
UPDATE "Content".comments SET parent_id = id + 10 WHERE id % 10 = 1 AND id < 290;
SELECT setval(pg_get_serial_sequence('"Content".comments', 'id'), 300);

INSERT INTO public.schema_migrations VALUES ('20210101000000', NULL), ('20210101000000', NULL),
    ('20220315120000', timestamptz '2022-03-15 12:00');

CREATE VIEW "Content".published_posts AS
    SELECT p."PostID", p.title, p.slug, u."displayName" AS author, p."publishedAt"
      FROM "Content"."Posts" p JOIN auth.users u ON u.id = p.author_id
     WHERE p.status = 'published';

CREATE MATERIALIZED VIEW search.tag_counts AS
    SELECT t.name, count(*) AS posts
      FROM "Content".post_tags pt JOIN "Content".tags t ON t.id = pt.tag_id
     GROUP BY t.name;
CREATE UNIQUE INDEX tag_counts_name ON search.tag_counts (name);

CREATE MATERIALIZED VIEW search.stale_report AS SELECT 1 AS one WITH NO DATA;

-- A text search configuration of the application's own, more index kinds, a rule-based view,
-- a sequence set with is_called false, comments on functions and a disabled trigger.
CREATE TEXT SEARCH CONFIGURATION search.blog (COPY = pg_catalog.english);
ALTER TEXT SEARCH CONFIGURATION search.blog ALTER MAPPING FOR asciiword WITH simple;
CREATE INDEX "Posts_body_fts" ON "Content"."Posts" USING gin (to_tsvector('search.blog'::regconfig, body));
CREATE INDEX comments_email_hash ON "Content".comments USING hash (author_email);
CREATE INDEX comments_post_include ON "Content".comments (post_id) INCLUDE (approved, created_at);
CREATE INDEX assets_name_c ON "Media Library"."Assets" ("FileName" COLLATE "C" text_pattern_ops);
CREATE SEQUENCE "Content".newsletter_issue START 50;
SELECT setval('"Content".newsletter_issue', 60, false);
COMMENT ON FUNCTION search.slugify(text) IS 'URL-safe form of a title';
CREATE TRIGGER "Reject Spam (legacy)" BEFORE UPDATE ON "Content".comments
    FOR EACH ROW EXECUTE FUNCTION "Content".reject_spam();
ALTER TABLE "Content".comments DISABLE TRIGGER "Reject Spam (legacy)";
CREATE TABLE "Content".pages (id serial PRIMARY KEY, path text UNIQUE NOT NULL, html text NOT NULL);
INSERT INTO "Content".pages (path, html) VALUES ('/about', '<h1>About</h1>'), ('/contact', '<p>Write us</p>');
CREATE VIEW "Content".page_paths AS SELECT id, path FROM "Content".pages;
CREATE RULE page_paths_update AS ON UPDATE TO "Content".page_paths
    DO INSTEAD UPDATE "Content".pages SET path = NEW.path WHERE id = OLD.id;

-- The CMS audits schema changes with an event trigger (a plugin's "DDL history" page reads it).
CREATE SCHEMA audit;
CREATE TABLE audit.ddl_history (
    id bigserial PRIMARY KEY,
    command_tag text NOT NULL,
    object_identity text,
    happened_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION audit.record_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    command record;
BEGIN
    FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO audit.ddl_history (command_tag, object_identity, happened_at)
        VALUES (command.command_tag, command.object_identity, '2024-01-01 00:00+00');
    END LOOP;
END
$$;
CREATE EVENT TRIGGER record_ddl ON ddl_command_end EXECUTE FUNCTION audit.record_ddl();
CREATE TABLE "Content".redirects (from_path text PRIMARY KEY, to_path text NOT NULL);
INSERT INTO "Content".redirects VALUES ('/old', '/new');
