"""One validation run: the core checks, the application's security and performance checks, and
the reports. Shared by the pg_migration_validate module and the benchmark."""

import time

from ..appchecks import app_checks
from ..common.preflight import connect_or_explain
from . import report
from .progress import ValidationProgress
from .validate import Validator


def _with_connection(params, variable, function, *args):
    conn = connect_or_explain(params, variable, "pgmigrate validate")
    try:
        return function(conn, *args)
    finally:
        conn.close()


def run_validation(source, target, directory, progress_file=None, **options):
    """Return (result, report paths, one-line message naming every failing check and table). progress_file:
    where the progress line goes while it runs (the live-progress callback prints it); options: those of
    _validate_and_report."""
    with ValidationProgress(progress_file) as progress:
        return _validate_and_report(source, target, directory, progress, **options)


def _validate_and_report(source, target, directory, progress, checks=None, workers=4, sample_limit=20,
                         sequences_exact=True, include_schemas=(), exclude_schemas=(), password_hash_columns=(),
                         encrypted_columns=(), performance_queries=(), query_limit_seconds=5.0,
                         query_slower_factor=2.0, required_indexes=(), added_extensions=(),
                         database_settings_carried=True, database_settings_skipped=(), extension_substitutes=None):
    started = time.monotonic()
    for params, variable in ((source, "migration_source"), (target, "migration_target")):
        _with_connection(params, variable, lambda conn: None)
    result = Validator(source, target, workers=workers, sample_limit=sample_limit,
                       include_schemas=include_schemas, exclude_schemas=exclude_schemas,
                       sequences_exact=sequences_exact, checks=checks, added_extensions=added_extensions,
                       extension_substitutes=extension_substitutes,
                       database_settings_carried=database_settings_carried,
                       database_settings_skipped=database_settings_skipped, progress=progress).run()
    if password_hash_columns or encrypted_columns or required_indexes or performance_queries:
        progress.begin("application checks")
    if password_hash_columns:
        result["checks"].append(_with_connection(target, "migration_target", app_checks.check_password_hashes,
                                                 list(password_hash_columns)))
    if encrypted_columns:
        result["checks"].append(_with_connection(target, "migration_target",
                                                 app_checks.check_plaintext_credentials, list(encrypted_columns)))
    if required_indexes:
        result["checks"].append(_with_connection(target, "migration_target", app_checks.check_required_indexes,
                                                 list(required_indexes)))
    if performance_queries:
        result["checks"].append(app_checks.check_queries(source, target, list(performance_queries),
                                                         limit_seconds=query_limit_seconds,
                                                         slower_factor=query_slower_factor))
    result["seconds"] = round(time.monotonic() - started, 3)
    result["status"] = "fail" if any(c["status"] == "fail" for c in result["checks"]) else "pass"
    progress.begin("reports")
    paths = report.write_reports(result, directory)
    message = report.failure_message(result) if result["status"] == "fail" else (
        f"Validation passed: {len(result['checks'])} checks in {result['seconds']} s")
    return result, paths, message

