"""pgmigrate: the plain-Python core behind the project's Ansible modules.

Catalog reading, dependency planning, the streaming copy engine and its resumable state live
here so that they can be unit-tested against real PostgreSQL servers; the modules in library/ are
thin wrappers around these functions.
"""
