"""Filter pgmigrate_directories_containing: which of some directories hold a path (the pre-check refusing
artifacts inside an AWX job's throwaway directories, playbooks/checks/inventory.yml)."""

import os


def directories_containing(directories, path):
    """The directories (absolute, already resolved) that are path itself or one of its parents."""
    path = os.path.normpath(path)
    return [d for d in directories if d and (path == os.path.normpath(d)
                                             or path.startswith(os.path.normpath(d).rstrip("/") + "/"))]


class FilterModule:
    def filters(self):
        return {"pgmigrate_directories_containing": directories_containing}
