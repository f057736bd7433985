"""The planner: levels, cycles, self-references, splitting, and the documented-order check."""

from conftest import connect
from pgmigrate.common import planner
from pgmigrate.common.catalog import read_catalog


def fk(child, parent, name=None):
    return {"child": child, "parent": parent, "name": name or f"{child}_{parent}_fk", "columns": ["x"]}


def test_levels_follow_foreign_keys():
    graph = planner.dependency_levels(
        ["a", "b", "c", "d"], [fk("b", "a"), fk("c", "b"), fk("d", "a"), fk("d", "c")])
    assert graph["levels"] == [["a"], ["b"], ["c"], ["d"]]
    assert graph["cycles"] == [] and graph["self_references"] == []


def test_cycle_is_one_unit_and_self_reference_is_ignored_for_order():
    graph = planner.dependency_levels(
        ["a", "b", "c", "tree"],
        [fk("a", "b", "a_b"), fk("b", "a", "b_a"), fk("c", "a"), fk("tree", "tree", "tree_parent")])
    assert graph["levels"] == [["a", "b", "tree"], ["c"]]
    assert graph["cycles"] == [{"tables": ["a", "b"], "constraints": ["a_b", "b_a"]}]
    assert graph["self_references"] == [{"table": "tree", "constraint": "tree_parent", "columns": ["x"]}]


def test_partitions_are_planned_with_their_parent():
    graph = planner.dependency_levels(
        ["orders", "orders_2024", "orders_2025", "customers", "items"],
        [fk("orders", "customers"), fk("items", "orders")],
        partition_parent={"orders_2024": "orders", "orders_2025": "orders"})
    assert graph["level_of"]["orders_2024"] == graph["level_of"]["orders"] == 1
    assert graph["level_of"]["items"] == 2


def test_deep_chain_has_no_recursion_limit():
    names = [f"t{i:05d}" for i in range(3000)]
    graph = planner.dependency_levels(names, [fk(names[i + 1], names[i]) for i in range(len(names) - 1)])
    assert len(graph["levels"]) == 3000


def test_split_ranges_cover_every_block_and_leave_the_last_open():
    assert planner.split_ranges(0, 4) == [(0, None)]
    assert planner.split_ranges(100, 1) == [(0, None)]
    assert planner.split_ranges(100, 4) == [(0, 25), (25, 50), (50, 75), (75, None)]
    assert planner.split_ranges(3, 8) == [(0, 1), (1, 2), (2, None)]


def test_documented_order_findings():
    plan = {
        "tables": [{"table": "public.users", "level": 0}, {"table": "public.team", "level": 1},
                   {"table": "public.roles", "level": 2}],
        "levels": [["public.users"], ["public.team"], ["public.roles"]],
        "depends_on": {"public.users": [], "public.team": ["public.users"], "public.roles": ["public.team"]},
    }
    findings = planner.compare_with_documented_order(
        plan, [{"table": "users", "level": 0}, {"table": "roles", "level": 1}, {"table": "team", "level": 1},
               {"table": "ghost", "level": 0}])
    kinds = {(f["table"], f["kind"]) for f in findings}
    assert ("public.roles", "order") in kinds  # listed before team, which it references
    assert ("public.roles", "level") in kinds  # documented level 1, really level 2
    assert ("public.ghost", "unknown") in kinds
    assert not any(f["table"] == "public.team" for f in findings)


def test_plan_from_a_real_catalog(scratch, source_server):
    params = scratch.create(source_server, "plan")
    conn = connect(params)
    with conn.cursor() as cur:
        cur.execute("""
            CREATE SCHEMA "Sales";
            CREATE TABLE "Sales"."Customer" (id int PRIMARY KEY, referrer int REFERENCES "Sales"."Customer");
            CREATE TABLE a (id int PRIMARY KEY, b_id int);
            CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
            ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b;
            CREATE TABLE orders (id int, customer int REFERENCES "Sales"."Customer", PRIMARY KEY (id))
                PARTITION BY RANGE (id);
            CREATE TABLE orders_1 PARTITION OF orders FOR VALUES FROM (0) TO (1000);
            CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g;
        """)
    conn.commit()
    catalog = read_catalog(conn)
    conn.close()
    plan = planner.build_plan(catalog, workers=4, split_tables_larger_than=1024 * 1024)
    by_name = {t["table"]: t for t in plan["tables"]}
    assert "public.orders" not in by_name  # partitioned parents hold no rows of their own
    assert by_name["public.orders_1"]["level"] == 1
    assert by_name['"Sales"."Customer"']["self_referencing"]
    assert plan["cycles"][0]["tables"] == ["public.a", "public.b"]
    assert len(by_name["public.big"]["parts"]) == 4
    notes = planner.handling_notes(plan, "existing")
    assert any("cycle public.a <-> public.b" in n and "re-added" in n for n in notes)
