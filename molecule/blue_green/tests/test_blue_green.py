"""After the blue-green runs of converge.yml (molecule.yml): each run ended as it should, the hosts and the
databases were where they should be after each (the snapshots steps/<run>.json, the outputs steps/<run>.log),
and every write of the clients (writes.jsonl, files/bg_writer.py) was handled right: each one acknowledged by
either host is in the final target exactly once, none was acknowledged by a host switched to the target
before the freeze (the target was read-only for it), none was lost.

The runs: 1 waves [1, 1], the second host's gate fails (a wrong password for the target: its checks fail);
2 abort; 3 the canary's gate fails (its probe is a write, which the held target refuses: the error share
fails); 4 abort; 5 waves [1, 1], the cutover.
"""

import datetime
import json
import re
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import ENV_FILE, EPHEMERAL, SECRETS, SOURCE_PORT, TARGET_PORT, dbname, http_get, instance, port  # noqa: E402
from scenario import server as embedded_server  # noqa: E402

DBNAME = dbname("cdp_molecule_blue_green")
APP1, APP2 = instance("pgmigrate-bg-app1"), instance("pgmigrate-bg-app2")
PORTS = {APP1: port(28400), APP2: port(28401)}
SITES = {APP1: port(28480), APP2: port(28481)}
RUNS = ("1-second-wave-fails", "2-abort", "3-canary-fails", "4-abort", "5-cutover")


def server(name):
    return embedded_server(name, DBNAME)


def rows(name, query, args=None):
    conn = psycopg2.connect(**server(name))
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def output(run):
    return (EPHEMERAL / "steps" / f"{run}.log").read_text()


def snapshot(run):
    return json.loads((EPHEMERAL / "steps" / f"{run}.json").read_text())


def words(text):
    """A regular expression matching text whatever the line breaks and indentation of the output."""
    return r"\s+".join(re.escape(word) for word in text.split())


def switch_line(host, from_port, to_port):
    """connection_switch's report of a switch of the host from one server to the other (password masked)."""
    return rf"DATABASE_URL\s+on\s+{host}:\s+\S+:{from_port}/{DBNAME}\s+->\s+\S+:{to_port}/{DBNAME}"


def on(snap, host):
    """(server port, database) of the host's DATABASE_URL and (port, read_only) of its /health, in a snapshot."""
    url = snap["hosts"][host]["database_url"]
    match = re.fullmatch(r"\[?[^\]/]*\]?:(\d+)/(.+)", url)
    assert match, url
    health = snap["hosts"][host]["health"]
    return int(match.group(1)), match.group(2), health.get("server_port"), health.get("read_only")


def read_only_setting(snap, name):
    setconfig = snap["catalog"][name]["settings"][0]["setconfig"]
    return "default_transaction_read_only=on" in setconfig.split(",")


def has_replication(snap):
    catalog = snap["catalog"]
    return {"source slots": [s["name"] for s in catalog["source"]["slots"]],
            "target subscriptions": [s["name"] for s in catalog["target"]["subscriptions"]],
            "source publications": [p["name"] for p in catalog["source"]["publications"]
                                    if p["name"].startswith("pgmigrate_")]}


def play_section(text, play_prefix):
    """The output of the play whose name starts with play_prefix, up to the next play."""
    match = re.search(r"PLAY \[" + re.escape(play_prefix) + r".*?(?=\nPLAY \[|\nPLAY RECAP|\Z)", text, re.S)
    return match.group(0) if match else ""


@pytest.fixture(scope="module")
def records():
    lines = [json.loads(line) for line in (EPHEMERAL / "writes.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in lines if r["kind"] == "write"], [r for r in lines if r["kind"] == "health"]


@pytest.fixture(scope="module")
def report():
    reports = list((EPHEMERAL / "artifacts" / "zero_downtime").glob("*/report.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


@pytest.fixture(scope="module")
def freeze(report):
    """(started, released) of the final run's write freeze, seconds since the epoch."""
    started = datetime.datetime.fromisoformat(report["freeze"]["freeze_started_at"]).timestamp()
    return started, report["freeze"]["released_epoch"]


def switched_periods(health, host):
    """Periods in which the host's application read the target held read-only (before the freeze): from the
    answer of the first /health that said so to the request of the last one in a row."""
    periods, start, last = [], None, None
    for sample in sorted((s for s in health if s["host"] == host), key=lambda s: s["sent"]):
        held = sample["status"] == 200 and sample["server_port"] == TARGET_PORT and sample["read_only"] is True
        if held and start is None:
            start = sample["done"]
        if held:
            last = sample["sent"]
        elif start is not None:
            periods.append((start, last))
            start = None
    if start is not None:
        periods.append((start, last))
    return [(a, b) for a, b in periods if b > a]


def acknowledged(write):
    return 200 <= write["status"] < 300


# --- each run ended as it should ------------------------------------------------------------------------------


def test_each_run_ended_as_expected():
    codes = {run: snapshot(run)["rc"] for run in RUNS}
    assert codes["1-second-wave-fails"] != 0 and codes["3-canary-fails"] != 0, codes
    assert codes["2-abort"] == codes["4-abort"] == codes["5-cutover"] == 0, codes
    for run in RUNS:
        assert output(run).rstrip().endswith(f"exit code: {codes[run]}")


def test_the_second_wave_was_stopped_by_its_gate_and_switched_back():
    text = output("1-second-wave-fails")
    # The canary passed its gate, the second host failed its checks (its application cannot log in on the target).
    assert re.search(words(f"{APP1} passes the gate: 0 of 10 requests failed"), text)
    assert re.search(words(f"The wave of {APP2} was stopped by its gate on {APP2}"), text)
    assert re.search(r"did\s+not\s+answer\s+as\s+expected", text)
    assert re.search(words(f"{APP2} is back on the source."), text)
    # It was moved, then moved back; nothing was frozen.
    assert re.search(switch_line(APP2, SOURCE_PORT, TARGET_PORT), text)
    assert re.search(switch_line(APP2, TARGET_PORT, SOURCE_PORT), text)
    assert "TASK [Freeze writes" not in text and "Write freeze:" not in text


def test_after_the_failed_second_wave_the_canary_reads_the_held_target_and_the_other_host_the_source():
    snap = snapshot("1-second-wave-fails")
    assert on(snap, APP1) == (TARGET_PORT, DBNAME, TARGET_PORT, True)
    assert on(snap, APP2) == (SOURCE_PORT, DBNAME, SOURCE_PORT, False)
    # Replication goes on; the target is read-only for the application, the source takes the writes.
    replication = has_replication(snap)
    assert all(replication.values()), replication
    assert read_only_setting(snap, "target") and not read_only_setting(snap, "source")


def test_the_abort_put_both_hosts_back_on_the_source_and_removed_the_replication():
    for run in ("2-abort", "4-abort"):
        snap = snapshot(run)
        for host in (APP1, APP2):
            assert on(snap, host) == (SOURCE_PORT, DBNAME, SOURCE_PORT, False), (run, host)
        replication = has_replication(snap)
        assert not any(replication.values()), (run, replication)
        assert not snap["catalog"]["target"]["slots"] and not snap["catalog"]["source"]["subscriptions"]
        assert not read_only_setting(snap, "target") and not read_only_setting(snap, "source"), run
        assert "Stopped before the switch; the source is as it was." in output(run)
    # The first abort moved the canary back; the second found no host on the target.
    assert re.search(switch_line(APP1, TARGET_PORT, SOURCE_PORT), output("2-abort"))
    assert not re.search(r"DATABASE_URL\s+on\s+\S+:\s+\S+\s+->", output("4-abort"))


def test_the_canarys_gate_failed_on_its_figures_and_the_second_host_never_moved():
    text = output("3-canary-fails")
    assert re.search(words(f"The wave of {APP1} was stopped by its gate on {APP1}"), text)
    assert re.search(words(f"the figures fail on {APP1}: 10 of 10 requests to")
                     + r"\s+\S+/health/write\s+failed", text)
    assert re.search(words(f"{APP1} is back on the source."), text)
    waves = play_section(text, "(2/5) WAVES")
    assert waves and APP1 in waves
    assert APP2 not in waves
    snap = snapshot("3-canary-fails")
    for host in (APP1, APP2):
        assert on(snap, host) == (SOURCE_PORT, DBNAME, SOURCE_PORT, False), host
    assert all(has_replication(snap).values())


def test_the_hosts_not_moved_kept_reading_the_source(records):
    """The second host's /health said source all through run 3 (its wave never came)."""
    _, health = records
    snap = snapshot("3-canary-fails")
    during = [s for s in health if s["host"] == APP2 and snap["started"] <= s["sent"] <= snap["ended"]]
    assert during
    assert {s["server_port"] for s in during if s["status"] == 200} == {SOURCE_PORT}
    # The canary was on the target for its gate, and back after.
    canary = [s for s in health if s["host"] == APP1 and snap["started"] <= s["sent"] <= snap["ended"]]
    assert any(s["server_port"] == TARGET_PORT and s["read_only"] is True for s in canary)


def test_the_clean_run_moved_both_waves_then_cut_over():
    text = output("5-cutover")
    for host in (APP1, APP2):
        assert re.search(words(f"{host} passes the gate: 0 of 10 requests failed"), text), host
    assert re.search(r"Write\s+freeze:", text)
    assert re.search(r"Zero-downtime\s+migration\s+done", text)
    snap = snapshot("5-cutover")
    for host in (APP1, APP2):
        assert on(snap, host) == (TARGET_PORT, DBNAME, TARGET_PORT, False), host
    assert not read_only_setting(snap, "target") and read_only_setting(snap, "source")
    # The forward replication is gone; the old source follows the new database (the reverse window).
    assert not snap["catalog"]["target"]["subscriptions"] and not snap["catalog"]["source"]["slots"]
    assert [s["name"] for s in snap["catalog"]["source"]["subscriptions"]]
    assert [s["name"] for s in snap["catalog"]["target"]["slots"]]


# --- the final state ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [APP1, APP2])
def test_both_hosts_now_use_the_target_and_their_writes_are_accepted(name):
    host = testinfra.get_host(f"podman://{name}")
    assert f":{TARGET_PORT}/{DBNAME}" in host.file(ENV_FILE).content_string
    assert f":{SOURCE_PORT}/{DBNAME}" in host.file(ENV_FILE + ".previous").content_string
    status, body = http_get(host, f"http://127.0.0.1:{PORTS[name]}/health")
    assert status == 200, body
    assert json.loads(body)["server_port"] == TARGET_PORT and json.loads(body)["read_only"] is False
    out = host.check_output(f"curl -sS --max-time 10 -w '\\n%{{http_code}}' -H 'Content-Type: application/json' "
                            f"-d '{{\"name\": \"{name}-final\"}}' http://127.0.0.1:{SITES[name]}/api/segments")
    body, status = out.rsplit("\n", 1)
    assert status == "201", out
    segment = json.loads(body)["id"]
    # (The old source gets it too, by the reverse replication: see the freeze test below.)
    assert rows("target", "SELECT name FROM public.segments WHERE id = %s", (segment,)) == [(f"{name}-final",)]


# --- every write --------------------------------------------------------------------------------------------


def test_the_clients_wrote_to_both_hosts_through_all_the_runs(records):
    writes, _ = records
    first, last = snapshot(RUNS[0])["started"], snapshot(RUNS[-1])["ended"]
    for host in (APP1, APP2):
        mine = [w for w in writes if w["host"] == host]
        assert min(w["sent"] for w in mine) < first and max(w["sent"] for w in mine) > last, host
        assert sum(1 for w in mine if acknowledged(w)) > 100, host


def test_every_acknowledged_write_is_in_the_target_exactly_once(records):
    writes, _ = records
    target = {}
    for segment, name in rows("target", "SELECT id::text, name FROM public.segments WHERE name LIKE 'pgmigrate-bg-%%'"):
        target.setdefault(name, []).append(segment)
    acked = [w for w in writes if acknowledged(w)]
    missing = [w["name"] for w in acked if w["name"] not in target]
    assert missing == [], f"{len(missing)} acknowledged writes missing, e.g. {missing[:5]}"
    twice = {name: ids for name, ids in target.items() if len(ids) > 1}
    assert twice == {}
    assert [w["name"] for w in acked if target[w["name"]] != [str(w["id"])]] == []
    # Nothing in the target that no client sent (the final test's own writes aside).
    sent = {w["name"] for w in writes}
    assert [name for name in target if name not in sent and not name.endswith("-final")] == []


def test_writes_refused_by_the_database_never_landed(records):
    writes, _ = records
    refused = {w["name"] for w in writes if w["status"] == 500}
    assert refused
    landed = set()
    for name in ("source", "target"):
        landed |= {n for (n,) in rows(name, "SELECT name FROM public.segments WHERE name = ANY(%s)", (list(refused),))}
    assert landed == set()


def test_writes_to_a_host_switched_before_the_freeze_were_refused(records):
    """While a host read the target held read-only (its /health said so, before and after the request), every
    write sent to it was refused: none was acknowledged, so the two databases never both took writes."""
    writes, health = records
    for host in (APP1, APP2):
        periods = switched_periods(health, host)
        assert periods, host
        inside = [w for w in writes if w["host"] == host and any(a <= w["sent"] and w["done"] <= b for a, b in periods)]
        assert inside, host
        assert [w for w in inside if acknowledged(w)] == [], host
        # Refused by the database: the application's INSERT in a read-only transaction (500).
        refused = [w for w in inside if w["status"] == 500]
        assert refused and all("read-only" in (w["error"] or "") for w in refused), refused[:5]
    # The canary held in runs 1, 3 and 5; the second host only in run 5 (its gate failed in run 1 at the checks).
    assert len(switched_periods(health, APP1)) >= 3


def test_writes_acknowledged_before_the_freeze_went_to_the_source_and_after_it_to_the_target(records, freeze):
    """Before the freeze every acknowledged write was the source's; after it the target's, which the old source
    follows by the reverse replication (zero_downtime_reverse_window_hours): it gets them too, once applied."""
    writes, _ = records
    started, released = freeze
    assert released - started < 5
    before = [w["name"] for w in writes if acknowledged(w) and w["done"] < started]
    after = [w["name"] for w in writes if acknowledged(w) and w["sent"] > released]
    assert before and after
    source = {n for (n,) in rows("source", "SELECT name FROM public.segments WHERE name LIKE 'pgmigrate-bg-%%'")}
    assert [name for name in before if name not in source] == []
    # Both hosts took writes again after the cutover.
    assert {w["host"] for w in writes if acknowledged(w) and w["sent"] > released} == {APP1, APP2}
    deadline = time.time() + 30
    while [name for name in after if name not in source] and time.time() < deadline:
        time.sleep(1)
        source = {n for (n,) in rows("source", "SELECT name FROM public.segments WHERE name LIKE 'pgmigrate-bg-%%'")}
    assert [name for name in after if name not in source] == []


def test_no_password_in_the_outputs_or_the_records():
    secrets = [(SECRETS / name).read_text().strip() for name in ("source.password", "target.password")]
    secrets.append((EPHEMERAL / "app.password").read_text().strip())
    texts = [p.read_text(errors="replace") for p in (EPHEMERAL / "steps").iterdir()]
    texts.append((EPHEMERAL / "writes.jsonl").read_text())
    texts += [p.read_text(errors="replace") for p in (EPHEMERAL / "artifacts").rglob("*.json")]
    for secret in secrets:
        assert all(secret not in text for text in texts)
