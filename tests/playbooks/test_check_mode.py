"""Every entry playbook under --check shows what it would do and changes nothing; tags select phases;
`ansible-playbook migrate.yml --list-tasks` reads like the plan's phases."""

import re
import subprocess

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, query, write_inventory
from pgmigrate.clone.copier import migrate

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")

# Playbooks whose hosts are the application's or the monitoring servers run nothing with the local
# inventory (those groups are empty); they are still parsed and checked.
ENTRY_PLAYBOOKS = ["migrate.yml", "playbooks/assess.yml", "playbooks/backup.yml", "playbooks/prepare_target.yml",
                   "playbooks/maintenance_on.yml", "playbooks/copy.yml", "playbooks/validate.yml",
                   "playbooks/rollback.yml", "playbooks/cutover.yml", "playbooks/monitoring.yml",
                   "playbooks/maintenance_off.yml", "playbooks/outcome.yml", "playbooks/staging_to_production.yml",
                   "playbooks/staging_sync.yml", "playbooks/zero_downtime.yml"]


# The target already holds the migrated database: the copies are asked to replace it, which --check must
# show without doing.
EXTRA_ARGS = {"migrate.yml": ["-e", "migration_target_overwrite=true"],
              "playbooks/copy.yml": ["-e", "migration_target_overwrite=true"],
              "playbooks/zero_downtime.yml": ["-e", "zero_downtime_target_overwrite=true"]}


def ansible_playbook(*args):
    return subprocess.run([ANSIBLE_PLAYBOOK, *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600,
                          check=False)


def database_state(params):
    """Everything --check must leave alone: table contents, and the objects of the catalog."""
    objects = query(params, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')")
    replication = query(params, "SELECT (SELECT count(*) FROM pg_publication), (SELECT count(*) FROM "
                                "pg_replication_slots), (SELECT count(*) FROM pg_subscription)")
    return dbcompare.table_digests(params), objects, replication


@pytest.fixture(scope="module")
def migrated_pair(tmp_path_factory):
    """A CDP source and a target already migrated from it (so validation and the syncs have a target),
    and a verified backup of the target (so the rollback has something to restore)."""
    from conftest import ScratchDatabases, _server
    scratch = ScratchDatabases()
    src = scratch.create(_server("source", 55432), "src")
    dst = scratch.create(_server("target", 55433), "dst")
    generate.load(src, 0.01)
    tmp_path = tmp_path_factory.mktemp("check_mode")
    migrate(src, dst, workers=2, artifacts_dir=str(tmp_path / "engine"))
    inventory = write_inventory(tmp_path, src, dst, {
        "staging_sync_source": {k: v for k, v in src.items() if k != "password"} | {
            "password": "{{ lookup('ansible.builtin.file', '" + str(tmp_path / "migration_source.password") + "') }}"},
        "staging_sync_masking_key": "check-mode-masking-key", "migration_profile": "cdp",
        "zero_downtime_switch_file": str(tmp_path / "database.json")})
    backup = ansible_playbook("playbooks/backup.yml", "-i", str(inventory), "-e", '{"backup_databases": ["target"]}')
    assert backup.returncode == 0, backup.stdout[-3000:]
    yield src, dst, inventory, tmp_path
    scratch.drop_all()


@pytest.mark.parametrize("playbook", ENTRY_PLAYBOOKS)
def test_check_mode_changes_nothing(migrated_pair, playbook):
    src, dst, inventory, tmp_path = migrated_pair
    before = database_state(src), database_state(dst)
    result = ansible_playbook(playbook, "-i", str(inventory), "--check", *EXTRA_ARGS.get(playbook, []))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (database_state(src), database_state(dst)) == before
    assert not (tmp_path / "database.json").exists()  # zero_downtime: no switch happened


def test_check_mode_shows_the_plans(migrated_pair):
    _src, _dst, inventory, _tmp_path = migrated_pair
    sync = ansible_playbook("playbooks/staging_sync.yml", "-i", str(inventory), "--check")
    assert "public.team: copy, truncated and reloaded; masked email: email, full_name: name" in sync.stdout
    assert "public.integrations: preserve, kept as it is (verified unchanged)" in sync.stdout


def test_migrate_yml_lists_the_plans_phases_in_order_and_tags_select_them(migrated_pair):
    _src, _dst, inventory, _tmp_path = migrated_pair
    listing = ansible_playbook("migrate.yml", "-i", str(inventory), "--list-tasks")
    assert listing.returncode == 0, listing.stdout[-3000:]
    phases = re.findall(r"play #\d+ \([^)]*\): \((\d)/10\) ([A-Z ]+):.*TAGS: \[(\w+)\]", listing.stdout)
    assert [(n, name) for n, name, _tag in phases] == [
        ("1", "ASSESS"), ("2", "BACKUP"), ("3", "PREPARE TARGET"), ("4", "MAINTENANCE"), ("5", "COPY"),
        ("6", "VALIDATE"), ("7", "CUTOVER"), ("8", "MONITORING"), ("9", "MAINTENANCE OFF")]
    assert [tag for _n, _name, tag in phases] == ["assess", "backup", "extensions", "maintenance", "copy",
                                                   "validate", "cutover", "monitoring", "maintenance"]
    tags = ansible_playbook("migrate.yml", "-i", str(inventory), "--list-tags")
    for tag in ("assess", "backup", "extensions", "maintenance", "copy", "validate", "rollback", "cutover",
                "monitoring"):
        assert tag in tags.stdout
    only_assess = ansible_playbook("migrate.yml", "-i", str(inventory), "--tags", "assess", "--list-tasks")
    assert "Assess the source and plan the copy" in only_assess.stdout
    assert "Copy (rows" not in only_assess.stdout
