"""What every check reads first: both catalogs, row-level security checked so that every table is read
whole, and the tables to compare."""

from concurrent.futures import ThreadPoolExecutor

from ..common import catalog as catalog_module
from .checks import ValidationError
from .digests import DigestStatements
from .pool import ROW_SECURITY_QUERY, row_security_refusal


class CatalogStep:
    def __init__(self, run):
        self.run = run  # context.ValidationRun

    def read_catalogs(self):
        """Both sides' catalogs, read in parallel, and the digest statements that fit their encodings."""
        with ThreadPoolExecutor(2) as pool:
            src = pool.submit(self._read_catalog, self.run.src_pool)
            dst = pool.submit(self._read_catalog, self.run.dst_pool)
            self.run.src_catalog, self.run.dst_catalog = src.result(), dst.result()
        # Servers in different encodings: text is digested by its UTF8 bytes, as the copy carried it.
        self.run.digest_statements = DigestStatements(
            utf8=self.run.src_catalog["server_encoding"] != self.run.dst_catalog["server_encoding"])

    def _read_catalog(self, pool):
        with pool.reading("reading the catalog") as conn:
            catalog = catalog_module.read_catalog(conn, self.run.exclude_schemas, self.run.include_schemas,
                                                  exact_sizes=False)
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_encoding')")
                catalog["server_encoding"] = cur.fetchone()[0]
            return catalog

    def check_row_security(self):
        """Every table must be read whole. Where row-level security would filter the validator's reads, the
        target's tables the login owns under FORCE ROW LEVEL SECURITY are read past it (ConnectionPool
        .reading); any other is refused here, before any check, naming the table and the fix."""
        refused = []
        for pool, catalog in ((self.run.src_pool, self.run.src_catalog), (self.run.dst_pool, self.run.dst_catalog)):
            names = {t["qualname"] for t in catalog["tables"]}
            with pool.reading("reading the tables' row-level security") as conn, conn.cursor() as cur:
                cur.execute(ROW_SECURITY_QUERY, (self.run.excluded(),))
                rows = cur.fetchall()
            for login, table, forced_owner in rows:
                if table not in names:
                    continue
                if forced_owner and pool is self.run.dst_pool:
                    pool.lifted.add(table)
                else:
                    refused.append((pool.side, login, table, forced_owner))
        if refused:
            raise ValidationError(row_security_refusal(refused))

    def select_tables(self):
        """The tables whose rows are compared (not partitioned parents), largest first, and those of them
        the target has."""
        tables = [t for t in self.run.src_catalog["tables"] if not t["partitioned"]]
        target_tables = {t["qualname"] for t in self.run.dst_catalog["tables"]}
        self.run.tables = sorted(tables, key=lambda t: -t["table_bytes"])
        self.run.common_tables = [t for t in self.run.tables if t["qualname"] in target_tables]
