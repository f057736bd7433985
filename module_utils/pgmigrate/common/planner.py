"""Dependency planning: the foreign-key graph, its strongly connected components (cycles), and
the levels in which tables can be loaded while foreign keys are in force.

Partitions are planned with their partitioned parent: a foreign key to a partitioned table makes
the child depend on every partition of it.
"""

DEFAULT_THROUGHPUT_BYTES_PER_SECOND = 60 * 1024 * 1024


def _strongly_connected_components(nodes, edges):
    """Tarjan's algorithm, iterative. edges: node -> set of nodes it depends on."""
    index_of, lowlink, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in nodes:
        if root in index_of:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index_of:
                    index_of[child] = lowlink[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    lowlink[node] = min(lowlink[node], index_of[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def dependency_levels(table_names, foreign_keys, partition_parent=None):
    """Compute load levels.

    table_names: tables to plan (qualified names); foreign_keys: dicts with child and parent;
    partition_parent: partition -> its partitioned parent (planned as one unit with it).
    Returns dict with levels (list of lists of table names), cycles, self_references, edges.
    """
    partition_parent = partition_parent or {}

    def unit(name):
        seen = set()
        while name in partition_parent and name not in seen:
            seen.add(name)
            name = partition_parent[name]
        return name

    units = sorted({unit(name) for name in table_names})
    edges = {u: set() for u in units}
    self_references = []
    for fk in foreign_keys:
        child, parent = unit(fk["child"]), unit(fk["parent"])
        if child not in edges or parent not in edges:
            continue
        if child == parent:
            self_references.append({"table": fk["child"], "constraint": fk["name"], "columns": fk["columns"]})
            continue
        edges[child].add(parent)

    components = _strongly_connected_components(units, edges)
    component_of = {member: i for i, comp in enumerate(components) for member in comp}
    cycles = [comp for comp in components if len(comp) > 1]

    def in_cycle(fk, comp):
        child, parent = unit(fk["child"]), unit(fk["parent"])
        return child in comp and parent in comp and child != parent

    # Tarjan emits a component only after every component it depends on, so one pass in
    # emission order computes the levels without recursion.
    level_of_component = {}
    for i, component in enumerate(components):
        deps = {component_of[p] for m in component for p in edges[m]} - {i}
        level_of_component[i] = 0 if not deps else 1 + max(level_of_component[d] for d in deps)

    unit_level = {member: level_of_component[component_of[member]] for member in units}
    table_level = {name: unit_level[unit(name)] for name in table_names}
    depth = max(table_level.values(), default=-1) + 1
    levels = [sorted(n for n, lvl in table_level.items() if lvl == i) for i in range(depth)]
    return {
        "levels": levels,
        "level_of": table_level,
        "cycles": [
            {"tables": comp, "constraints": sorted(fk["name"] for fk in foreign_keys if in_cycle(fk, comp))}
            for comp in cycles
        ],
        "self_references": self_references,
        "depends_on": {u: sorted(edges[u]) for u in units},
    }


def split_ranges(pages, parts):
    """Split a heap of `pages` blocks into `parts` ctid block ranges [start, end); the last range is
    open-ended (end None) so rows in blocks added after planning are never missed."""
    parts = max(1, min(parts, pages)) if pages else 1
    if parts == 1:
        return [(0, None)]
    step = -(-pages // parts)
    bounds = [i * step for i in range(parts)]
    return [(start, bounds[i + 1] if i + 1 < len(bounds) else None) for i, start in enumerate(bounds)]


def build_plan(catalog, workers=4, split_tables_larger_than=1 << 30, max_parts_per_table=None,
               throughput_bytes_per_second=DEFAULT_THROUGHPUT_BYTES_PER_SECOND, split_self_referencing=True):
    """The copy plan: tables with their dependency level and their parts (ctid block ranges).

    With foreign keys in force (schema mode existing) a self-referencing table is never split:
    one COPY checks its rows' references only once all of them are in."""
    tables = [t for t in catalog["tables"] if not t["partitioned"]]
    partition_parent = {t["qualname"]: t["parent"] for t in catalog["tables"] if t.get("parent")}
    graph = dependency_levels([t["qualname"] for t in catalog["tables"]], catalog["foreign_keys"],
                              partition_parent)
    max_parts = max_parts_per_table or max(2, workers)
    self_referencing = {s["table"] for s in graph["self_references"]}
    planned = []
    for table in tables:
        parts = 1
        splittable = split_self_referencing or table["qualname"] not in self_referencing
        if splittable and split_tables_larger_than and table["heap_bytes"] > split_tables_larger_than:
            parts = min(max_parts, -(-table["heap_bytes"] // split_tables_larger_than))
        ranges = split_ranges(table["pages"], parts)
        planned.append({
            "table": table["qualname"],
            "level": graph["level_of"][table["qualname"]],
            "bytes": table["table_bytes"],
            "total_bytes": table["total_bytes"],
            "rows": table["row_estimate"],
            "self_referencing": table["qualname"] in self_referencing,
            "parts": [
                {"id": table["qualname"] if len(ranges) == 1 else f"{table['qualname']}#{i + 1}/{len(ranges)}",
                 "start_page": start if len(ranges) > 1 else None,
                 "end_page": end if len(ranges) > 1 else None}
                for i, (start, end) in enumerate(ranges)
            ],
        })
    planned.sort(key=lambda p: (p["level"], -p["bytes"], p["table"]))
    total_bytes = sum(p["total_bytes"] for p in planned)
    return {
        "tables": planned,
        "levels": graph["levels"],
        "cycles": graph["cycles"],
        "self_references": graph["self_references"],
        "depends_on": graph["depends_on"],
        "total_bytes": total_bytes,
        "total_rows": sum(p["rows"] for p in planned),
        "estimated_seconds": round(total_bytes / throughput_bytes_per_second, 1),
    }


def handling_notes(plan, schema_mode="copy"):
    """Say how each cycle and self-reference is handled, in words for the operator."""
    notes = []
    for cycle in plan["cycles"]:
        if schema_mode == "copy":
            how = "foreign keys are created after all data is loaded, so the cycle needs nothing special"
        else:
            how = ("its foreign keys (" + ", ".join(cycle["constraints"]) + ") are dropped before the load, "
                   "kept in the run's state, and re-added and validated after it")
        notes.append(f"cycle {' <-> '.join(cycle['tables'])}: loaded as one level; {how}")
    for ref in plan["self_references"]:
        if schema_mode == "copy":
            how = "the foreign key is created after the load"
        else:
            how = "the table is copied in one COPY (never split), so the key is checked once all rows are in"
        notes.append(f"self-reference {ref['table']} ({ref['constraint']}): {how}")
    return notes


def compare_with_documented_order(plan, documented):
    """Compare the computed levels with a hand-written order.

    documented: list of {"table": name, "level": n} in the document's order (level as the document
    numbers it, 0 = independent). Names may be bare (public schema) or qualified.
    Returns a list of findings, each {"table", "kind", "message"}.
    """
    def norm(name):
        return name if "." in name else f"public.{name}"

    level_of = {t["table"]: t["level"] for t in plan["tables"]}
    for i, level in enumerate(plan["levels"]):
        for name in level:
            level_of.setdefault(name, i)
    position = {norm(d["table"]): i for i, d in enumerate(documented)}
    documented_level = {norm(d["table"]): d.get("level") for d in documented}
    findings = []
    for entry in documented:
        name = norm(entry["table"])
        if name not in level_of:
            findings.append({"table": name, "kind": "unknown",
                             "message": f"{name} is listed in the document but does not exist in the source"})
            continue
        parents = [p for p in plan["depends_on"].get(name, [])]
        later = [p for p in parents if position.get(p, -1) > position[name]]
        for parent in later:
            findings.append({"table": name, "kind": "order",
                             "message": f"{name} is listed at position {position[name] + 1} but depends on "
                                        f"{parent}, listed later at position {position[parent] + 1}"})
        missing_parents = [p for p in parents if p not in position]
        for parent in missing_parents:
            findings.append({"table": name, "kind": "order",
                             "message": f"{name} depends on {parent}, which the document does not list"})
        stated = documented_level[name]
        if stated is not None and stated != level_of[name]:
            findings.append({"table": name, "kind": "level",
                             "message": f"{name} is documented at level {stated} but its foreign keys put it at "
                                        f"level {level_of[name]}"
                                        + (f" (depends on {', '.join(parents)})" if parents else " (no dependencies)")})
    for name in sorted(level_of):
        if name not in position:
            findings.append({"table": name, "kind": "missing",
                             "message": f"{name} exists in the source but the document does not list it"})
    return findings
