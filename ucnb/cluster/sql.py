"""FlareDB's SQL rows inside a guest (sqlite3 stands in on the lab): seed, dump, restore into a
fresh database, and the per-table state a backup is compared by (row count, ordered digest).

SQL travels on the client's stdin, never through the shell; the only values spliced into a
command line are database paths of our own, quoted. Rows are read as one `quote()`d literal per
column (an SQL literal is unambiguous for every type: text with quotes or newlines, reals, blobs,
NULL), so the digest of a table does not depend on row order or on sqlite's output modes.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ucnb.cluster.backup import ordered_digest
from ucnb.errors import LaneFailure
from ucnb.lab.lab import Node

DATABASE = "/lab/var/flaredb/flaredb.db"   # the lab's FlareDB database (ucnb/image/guest/sv/flaredb/run)
SEED_TABLE = "durability_rows"


def seed_sql(rows: int) -> str:
    """Rows of every storage class (integers, text with quotes and newlines, reals, blobs, NULL)
    in a table of ours, ids with gaps, and `rows` entries in the stand-in's own `kv` table."""
    rows = int(rows)
    return f"""
CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT);
DROP TABLE IF EXISTS {SEED_TABLE};
CREATE TABLE {SEED_TABLE}(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, payload BLOB, note TEXT);
CREATE INDEX {SEED_TABLE}_name ON {SEED_TABLE}(name);
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})
INSERT INTO {SEED_TABLE}(id, name, score, payload, note)
  SELECT i, printf('row-%06d', i), i * 0.25, CAST(printf('%08x', (i * 2654435761) % 4294967296) AS BLOB),
         CASE WHEN i % 3 = 0 THEN NULL
              ELSE printf('it''s row %d, "quoted",' || char(10) || 'two lines', i) END
  FROM c;
DELETE FROM {SEED_TABLE} WHERE id % 7 = 0;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})
INSERT OR REPLACE INTO kv(k, v) SELECT printf('durability/%06d', i), printf('value-%d', i) FROM c;
COMMIT;
"""


def quote_ident(name: str) -> str:
    """An SQL identifier, double-quoted (inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def row_select(table: str, columns: list[str]) -> str:
    """SELECT one text per row: every column's SQL literal, comma-joined."""
    expression = " || ',' || ".join(f"quote({quote_ident(c)})" for c in columns) or "''"
    return f"SELECT {expression} AS r FROM {quote_ident(table)}"


def parse_json_rows(text: str) -> list[dict[str, object]]:
    """sqlite3 -json output (nothing at all for an empty result)."""
    text = text.strip()
    rows: list[dict[str, object]] = json.loads(text) if text else []
    return rows


@dataclass(frozen=True)
class TableState:
    rows: int
    digest: str


class Database:
    """One sqlite3 database file on a guest."""

    def __init__(self, node: Node, path: str = DATABASE) -> None:
        self.node, self.path = node, path

    def run(self, sql: str, json_mode: bool = False, timeout: float = 60.0) -> str:
        """Execute `sql` (on stdin, stopping at the first error); returns what it printed."""
        mode = " -json" if json_mode else ""
        result = self.node.run(f"sqlite3 -bail{mode} {shlex.quote(self.path)}", stdin=sql, timeout=timeout)
        if not result.ok:
            raise LaneFailure(f"{self.node.name}: sqlite3 {self.path} failed: {result}")
        return result.stdout

    def query(self, sql: str) -> list[dict[str, object]]:
        return parse_json_rows(self.run(sql, json_mode=True))

    def dump(self) -> str:
        """`.dump`: the schema and every row as SQL text (the logical backup)."""
        return self.run(".dump\n")

    def restore_from(self, dump: str) -> None:
        """Make this database fresh from a dump (any file already at the path is removed first)."""
        self.node.run(f"rm -f {shlex.quote(self.path)}", timeout=15, check=True)
        self.run(dump, timeout=120)

    def integrity(self) -> str:
        """`PRAGMA integrity_check`: `ok`, or the problems sqlite found."""
        return "; ".join(str(r["integrity_check"]) for r in self.query("PRAGMA integrity_check;\n"))

    def state(self) -> tuple[str, dict[str, TableState]]:
        """The schema's ordered digest (of sqlite_master) and every table's row count and ordered
        digest: two sqlite3 runs (the columns, then every table's rows as one JSON array each)."""
        doc = json.loads(str(self.query(STRUCTURE_QUERY)[0]["doc"]))
        columns: dict[str, list[str]] = {}
        for table, _, column in sorted(doc["columns"], key=lambda c: (str(c[0]), int(c[1]))):
            columns.setdefault(str(table), []).append(str(column))
        schema = ordered_digest(json.dumps(row) for row in doc["schema"])
        if not columns:
            return schema, {}
        selects = [f"SELECT {quote_literal(t)} AS t, json_group_array(r) AS data FROM ({row_select(t, c)})"
                   for t, c in sorted(columns.items())]
        tables = {}
        for row in self.query(" UNION ALL ".join(selects) + ";\n"):
            rows = [str(r) for r in json.loads(str(row["data"]))]
            tables[str(row["t"])] = TableState(len(rows), ordered_digest(json.dumps(r) for r in rows))
        return schema, tables


# Tables (ours and the stand-in's, not sqlite's own) with their columns in order, and sqlite_master.
STRUCTURE_QUERY = """SELECT json_object(
  'columns', json((SELECT json_group_array(json_array(m.name, p.cid, p.name))
                   FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p
                   WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%')),
  'schema', json((SELECT json_group_array(json_array(type, name, tbl_name, sql)) FROM sqlite_master))) AS doc;
"""


def quote_literal(text: str) -> str:
    """An SQL string literal (inner quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"
