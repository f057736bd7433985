"""The run's summary: what the module returns and the run directory's summary.json keeps."""

import json
import os
import time

from ..common import extension_substitutes
from ..common.connection import describe


class RunSummary:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def build(self, status, started):
        run = self.run
        tables = []
        if run.plan:
            for table_plan in run.plan["tables"]:
                parts = [run.results.get(p["id"]) for p in table_plan["parts"]]
                done_parts = [p for p in parts if p]
                tables.append({
                    "table": table_plan["table"], "level": table_plan["level"],
                    "rows": sum(p.get("rows") or 0 for p in done_parts),
                    "bytes": sum(p.get("bytes") or 0 for p in done_parts),
                    "seconds": round(sum(p.get("seconds") or 0 for p in done_parts), 3),
                    "workers": sorted({p.get("worker") for p in done_parts if p.get("worker") is not None}),
                    "parts": len(parts), "parts_done": len(done_parts),
                    "resumed_parts": sum(1 for p in done_parts if p.get("resumed")),
                })
        return {
            "status": status,
            "run_id": run.run_id,
            "resumed": run.resumed,
            "source": describe(run.source),
            "target": describe(run.target),
            "schema_mode": run.options["schema_mode"],
            "workers": run.options["workers"],
            "snapshot": run.snapshot_id or ("none (source declared frozen)" if run.options["source_frozen"]
                                             else None),
            "seconds": round(time.monotonic() - started, 2),
            # Where the time went: "setup" (snapshot, catalog, plan) before the progress record began, then each
            # phase ("starting" is the target's preparation: overwrite, the run's state).
            "phases": self._phase_breakdown(started),
            "tables": tables,
            "rows": sum(t["rows"] for t in tables),
            "bytes": sum(t["bytes"] for t in tables),
            "sequences": len(run.catalog["sequences"]) if run.catalog else 0,
            "post_data_entries": len(run.post_entries),
            "large_objects": {"count": len(run.large_objects), "bytes": sum(lo["bytes"] for lo in run.large_objects),
                              **run.large_object_stats},
            "database_settings": [
                {"role": s["role"], "name": s["name"], "value": s["value"]} for s in run.settings_to_apply],
            "plan": {"levels": run.plan["levels"], "cycles": run.plan["cycles"],
                     "self_references": run.plan["self_references"]} if run.plan else None,
            # How the schema differs from the source's: extensions left out, substitutes in their place.
            "extension_substitutes": extension_substitutes.notes(run.extension_substitution or {"left_out": []}),
            "warnings": run.warnings,
            "events": run.events[-200:],
            # Each pool job of this run (a resumed run's earlier jobs are not there): its table, step (data,
            # indexes, constraints, analyze, large objects, post-data), worker, start and end in seconds from
            # the run's start: the reports' timeline (module_utils/pgmigrate/reports).
            "timeline": self._timeline(started),
            "run_dir": run.run_dir,
        }

    # The post-data entries' types (the dump's) by the timeline's step.
    STEP_OF_TYPE = {"INDEX": "indexes", "CONSTRAINT": "constraints", "FK CONSTRAINT": "constraints"}

    def _timeline(self, started):
        run = self.run
        table_of_part = {p["id"]: t["table"] for t in (run.plan or {}).get("tables", []) for p in t["parts"]}
        entries = {e["key"]: e for e in run.post_entries}
        timeline = []
        for job in sorted(run.job_timeline, key=lambda j: j["start"]):
            kind, _, name = job["key"].partition(":")
            if kind == "data":
                table, step = table_of_part.get(name), "data"
            elif kind == "post":
                entry = entries.get(name) or {}
                table, step = entry.get("table"), self.STEP_OF_TYPE.get(entry.get("type"), "post-data")
            elif kind == "attach":
                table, step = name, "constraints"
            elif kind == "analyze":
                table, step = name, "analyze"
            elif kind == "lo":
                table, step = None, "large objects"
            else:
                table, step = None, kind
            timeline.append({"table": table, "step": step, "worker": job["worker"], "key": job["key"],
                             "start": round(job["start"] - started, 3), "end": round(job["end"] - started, 3)})
        return timeline

    def _phase_breakdown(self, started):
        if not self.run.progress:
            return {}
        phases = self.run.progress.phase_seconds()
        return {"setup": round(self.run.progress.started - started, 2), **phases}

    def write(self, summary):
        if not self.run.run_dir:
            return
        path = os.path.join(self.run.run_dir, "summary.json")
        with open(path, "w") as handle:
            json.dump(summary, handle, indent=1, default=str)
        summary["summary_file"] = path
        # Its picture beside it: report.html (reports/render.py). The copy's outcome never depends on it.
        try:
            from ..reports.render import render_copy_html
            report = os.path.join(self.run.run_dir, "report.html")
            with open(report, "w") as handle:
                handle.write(render_copy_html(summary))
            summary["report_file"] = report
        except Exception as error:  # noqa: BLE001 - a report that cannot be drawn is a warning, not a failure
            summary["warnings"].append(f"report.html not written: {type(error).__name__}: {error}")
