"""A copy limited to some schemas (migration_include_schemas), public among them: pg_dump --schema public
writes CREATE SCHEMA public, which every target already has; the restore leaves it out."""

from conftest import execute, query
from pgmigrate.clone import copier


def test_a_copy_limited_to_public_and_another_schema_copies_them_and_leaves_the_rest(db_pair, tmp_path):
    src, dst = db_pair
    execute(src,
            "CREATE SCHEMA billing",
            "CREATE TABLE public.account (id int PRIMARY KEY, name text)",
            "CREATE TABLE billing.invoice (id int PRIMARY KEY, account_id int REFERENCES public.account (id))",
            "CREATE SCHEMA scratch",
            "CREATE TABLE scratch.tmp (id int)",
            "INSERT INTO public.account SELECT g, 'a' || g FROM generate_series(1, 50) g",
            "INSERT INTO billing.invoice SELECT g, 1 + g % 50 FROM generate_series(1, 200) g")
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), workers=2,
                             include_schemas=["public", "billing"])
    assert summary["status"] == "complete"
    assert query(dst, "SELECT count(*) FROM public.account") == [(50,)]
    assert query(dst, "SELECT count(*), sum(account_id) FROM billing.invoice") == \
        query(src, "SELECT count(*), sum(account_id) FROM billing.invoice")
    assert query(dst, "SELECT count(*) FROM pg_namespace WHERE nspname = 'scratch'") == [(0,)]
    assert query(dst, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == [(1,)]
