"""The run's summary: what the module returns and the run directory's summary.json keeps."""

import json
import os
import time

from ..common.connection import describe


class RunSummary:
    """A step of copier.Engine: the run's context (options, plan, state, progress) is the engine's."""

    def _summary(self, status, started):
        tables = []
        if self.plan:
            for table_plan in self.plan["tables"]:
                parts = [self.results.get(p["id"]) for p in table_plan["parts"]]
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
            "run_id": self.run_id,
            "resumed": self.resumed,
            "source": describe(self.source),
            "target": describe(self.target),
            "schema_mode": self.options["schema_mode"],
            "workers": self.options["workers"],
            "snapshot": self.snapshot_id or ("none (source declared frozen)" if self.options["source_frozen"]
                                             else None),
            "seconds": round(time.monotonic() - started, 2),
            # Where the time went: "setup" (snapshot, catalog, plan) before the progress record began, then each
            # phase ("starting" is the target's preparation: overwrite, the run's state).
            "phases": self._phase_breakdown(started),
            "tables": tables,
            "rows": sum(t["rows"] for t in tables),
            "bytes": sum(t["bytes"] for t in tables),
            "sequences": len(self.catalog["sequences"]) if self.catalog else 0,
            "post_data_entries": len(getattr(self, "post_entries", []) or []),
            "large_objects": {"count": len(self.large_objects), "bytes": sum(lo["bytes"] for lo in self.large_objects),
                              **self.large_object_stats},
            "database_settings": [
                {"role": s["role"], "name": s["name"], "value": s["value"]} for s in self.settings_to_apply],
            "plan": {"levels": self.plan["levels"], "cycles": self.plan["cycles"],
                     "self_references": self.plan["self_references"]} if self.plan else None,
            "warnings": self.warnings,
            "events": self.events[-200:],
            "run_dir": self.run_dir,
        }

    def _phase_breakdown(self, started):
        if not self.progress:
            return {}
        phases = self.progress.phase_seconds()
        return {"setup": round(self.progress.started - started, 2), **phases}

    def _write_summary(self, summary):
        if not self.run_dir:
            return
        path = os.path.join(self.run_dir, "summary.json")
        with open(path, "w") as handle:
            json.dump(summary, handle, indent=1, default=str)
        summary["summary_file"] = path
