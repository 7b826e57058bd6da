"""Enough of PostgreSQL's catalog for drivers and BI tools to browse the cubes.

Drivers list schemas, tables and columns with long catalog queries (psql's ``\\dt``, JDBC's
``DatabaseMetaData.getColumns``, psqlODBC's ``SQLColumns``, SQLAlchemy's inspector). Rather
than recognise each one, they run against small tables in an in-memory DuckDB, which speaks
most of PostgreSQL's SQL: ``pg_catalog.*`` and ``information_schema.*`` are rewritten to the
schemas ``pgcat`` and ``infschema`` that hold statcube's own rows — a schema per release the
caller may see, a table per cube, a column per attribute and aggregate with PostgreSQL type
OIDs (DuckDB's built-in pg_catalog describes its own tables, with its own type ids) — and
the functions drivers call (``format_type``, ``pg_get_expr``, ``current_schemas`` …) are
DuckDB macros. No cube value is ever in the catalog: only names, types and descriptions.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from cube.sqlapi.surface import CubeTable, ResultSet, SqlError

#: PostgreSQL type name → (oid, typlen, category, array oid)
TYPES: dict[str, tuple[int, int, str, int]] = {
    "bool": (16, 1, "B", 1000), "bytea": (17, -1, "U", 1001), "char": (18, 1, "S", 1002),
    "name": (19, 64, "S", 1003), "int8": (20, 8, "N", 1016), "int2": (21, 2, "N", 1005),
    "int4": (23, 4, "N", 1007), "regproc": (24, 4, "N", 1008), "text": (25, -1, "S", 1009),
    "oid": (26, 4, "N", 1028), "float4": (700, 4, "N", 1021), "float8": (701, 8, "N", 1022),
    "bpchar": (1042, -1, "S", 1014), "varchar": (1043, -1, "S", 1015),
    "date": (1082, 4, "D", 1182), "time": (1083, 8, "D", 1183),
    "timestamp": (1114, 8, "D", 1115), "timestamptz": (1184, 8, "D", 1185),
    "numeric": (1700, -1, "N", 1231), "unknown": (705, -2, "X", 0),
}
FORMAT = {"int8": "bigint", "int4": "integer", "int2": "smallint", "text": "text",
          "float8": "double precision", "float4": "real", "bool": "boolean",
          "varchar": "character varying", "numeric": "numeric", "name": "name",
          "date": "date", "timestamp": "timestamp without time zone",
          "timestamptz": "timestamp with time zone", "oid": "oid", "char": "\"char\""}
NS_CATALOG, NS_PUBLIC, NS_INFO = 11, 2200, 13183
#: Catalog relations drivers name with ``'pg_class'::regclass``.
CATALOG_OIDS = {"pg_class": 1259, "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255,
                "pg_namespace": 2615, "pg_constraint": 2606, "pg_description": 2609}

_TABLES: dict[str, str] = {
    "pg_namespace": "oid BIGINT, nspname VARCHAR, nspowner BIGINT, nspacl VARCHAR",
    "pg_class": "oid BIGINT, relname VARCHAR, relnamespace BIGINT, reltype BIGINT, "
                "reloftype BIGINT, relowner BIGINT, relam BIGINT, relfilenode BIGINT, "
                "reltablespace BIGINT, relpages INTEGER, reltuples DOUBLE, relallvisible "
                "INTEGER, reltoastrelid BIGINT, relhasindex BOOLEAN, relisshared BOOLEAN, "
                "relpersistence VARCHAR, relkind VARCHAR, relnatts INTEGER, relchecks INTEGER, "
                "relhasrules BOOLEAN, relhastriggers BOOLEAN, relhassubclass BOOLEAN, "
                "relrowsecurity BOOLEAN, relforcerowsecurity BOOLEAN, relispopulated BOOLEAN, "
                "relreplident VARCHAR, relispartition BOOLEAN, relrewrite BIGINT, "
                "relfrozenxid BIGINT, relminmxid BIGINT, relacl VARCHAR, reloptions VARCHAR[], "
                "relpartbound VARCHAR, relhasoids BOOLEAN",
    "pg_attribute": "attrelid BIGINT, attname VARCHAR, atttypid BIGINT, attstattarget INTEGER, "
                    "attlen INTEGER, attnum INTEGER, attndims INTEGER, attcacheoff INTEGER, "
                    "atttypmod INTEGER, attbyval BOOLEAN, attalign VARCHAR, attstorage VARCHAR, "
                    "attcompression VARCHAR, attnotnull BOOLEAN, atthasdef BOOLEAN, "
                    "atthasmissing BOOLEAN, attidentity VARCHAR, attgenerated VARCHAR, "
                    "attisdropped BOOLEAN, attislocal BOOLEAN, attinhcount INTEGER, "
                    "attcollation BIGINT, attacl VARCHAR, attoptions VARCHAR, "
                    "attfdwoptions VARCHAR, attmissingval VARCHAR",
    "pg_type": "oid BIGINT, typname VARCHAR, typnamespace BIGINT, typowner BIGINT, "
               "typlen INTEGER, typbyval BOOLEAN, typtype VARCHAR, typcategory VARCHAR, "
               "typispreferred BOOLEAN, typisdefined BOOLEAN, typdelim VARCHAR, "
               "typrelid BIGINT, typsubscript VARCHAR, typelem BIGINT, typarray BIGINT, "
               "typinput VARCHAR, typoutput VARCHAR, typreceive VARCHAR, typsend VARCHAR, "
               "typmodin VARCHAR, typmodout VARCHAR, typanalyze VARCHAR, typalign VARCHAR, "
               "typstorage VARCHAR, typnotnull BOOLEAN, typbasetype BIGINT, typtypmod INTEGER, "
               "typndims INTEGER, typcollation BIGINT, typdefaultbin VARCHAR, "
               "typdefault VARCHAR, typacl VARCHAR",
    "pg_description": "objoid BIGINT, classoid BIGINT, objsubid INTEGER, description VARCHAR",
    "pg_attrdef": "oid BIGINT, adrelid BIGINT, adnum INTEGER, adbin VARCHAR, adsrc VARCHAR",
    "pg_index": "indexrelid BIGINT, indrelid BIGINT, indnatts INTEGER, indnkeyatts INTEGER, "
                "indisunique BOOLEAN, indisprimary BOOLEAN, indisexclusion BOOLEAN, "
                "indimmediate BOOLEAN, indisclustered BOOLEAN, indisvalid BOOLEAN, "
                "indcheckxmin BOOLEAN, indisready BOOLEAN, indislive BOOLEAN, "
                "indisreplident BOOLEAN, indkey INTEGER[], indcollation BIGINT[], "
                "indclass BIGINT[], indoption INTEGER[], indexprs VARCHAR, indpred VARCHAR, "
                "indnullsnotdistinct BOOLEAN",
    "pg_constraint": "oid BIGINT, conname VARCHAR, connamespace BIGINT, contype VARCHAR, "
                     "condeferrable BOOLEAN, condeferred BOOLEAN, convalidated BOOLEAN, "
                     "conrelid BIGINT, contypid BIGINT, conindid BIGINT, conparentid BIGINT, "
                     "confrelid BIGINT, confupdtype VARCHAR, confdeltype VARCHAR, "
                     "confmatchtype VARCHAR, conislocal BOOLEAN, coninhcount INTEGER, "
                     "connoinherit BOOLEAN, conkey INTEGER[], confkey INTEGER[], "
                     "conpfeqop BIGINT[], conppeqop BIGINT[], conffeqop BIGINT[], "
                     "conexclop BIGINT[], conbin VARCHAR",
    "pg_inherits": "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, "
                   "inhdetachpending BOOLEAN",
    "pg_database": "oid BIGINT, datname VARCHAR, datdba BIGINT, encoding INTEGER, "
                   "datcollate VARCHAR, datctype VARCHAR, datistemplate BOOLEAN, "
                   "datallowconn BOOLEAN, datconnlimit INTEGER, dattablespace BIGINT, "
                   "datacl VARCHAR[], datlocprovider VARCHAR, daticulocale VARCHAR, "
                   "datcollversion VARCHAR",
    "pg_roles": "oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, "
                "rolcreaterole BOOLEAN, rolcreatedb BOOLEAN, rolcanlogin BOOLEAN, "
                "rolreplication BOOLEAN, rolconnlimit INTEGER, rolpassword VARCHAR, "
                "rolvaliduntil VARCHAR, rolbypassrls BOOLEAN, rolconfig VARCHAR",
    "pg_user": "usename VARCHAR, usesysid BIGINT, usecreatedb BOOLEAN, usesuper BOOLEAN, "
               "userepl BOOLEAN, usebypassrls BOOLEAN, passwd VARCHAR, valuntil VARCHAR, "
               "useconfig VARCHAR",
    "pg_opclass": "oid BIGINT, opcmethod BIGINT, opcname VARCHAR, opcnamespace BIGINT, "
                  "opcowner BIGINT, opcfamily BIGINT, opcintype BIGINT, opcdefault BOOLEAN, "
                  "opckeytype BIGINT",
    "pg_am": "oid BIGINT, amname VARCHAR, amhandler VARCHAR, amtype VARCHAR",
    "pg_proc": "oid BIGINT, proname VARCHAR, pronamespace BIGINT, proowner BIGINT, "
               "prolang BIGINT, prokind VARCHAR, proretset BOOLEAN, prorettype BIGINT, "
               "proargtypes VARCHAR, proargnames VARCHAR[], proargmodes VARCHAR[], "
               "proallargtypes BIGINT[], pronargs INTEGER, prosrc VARCHAR",
    "pg_tablespace": "oid BIGINT, spcname VARCHAR, spcowner BIGINT",
    "pg_settings": "name VARCHAR, setting VARCHAR, unit VARCHAR, category VARCHAR, "
                   "short_desc VARCHAR, context VARCHAR, vartype VARCHAR, source VARCHAR",
    "pg_extension": "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, "
                    "extversion VARCHAR",
    "pg_enum": "oid BIGINT, enumtypid BIGINT, enumsortorder DOUBLE, enumlabel VARCHAR",
    "pg_range": "rngtypid BIGINT, rngsubtype BIGINT",
    "pg_collation": "oid BIGINT, collname VARCHAR, collnamespace BIGINT",
    "pg_trigger": "oid BIGINT, tgrelid BIGINT, tgname VARCHAR, tgisinternal BOOLEAN",
    "pg_rewrite": "oid BIGINT, rulename VARCHAR, ev_class BIGINT",
    "pg_policy": "oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, "
                 "polpermissive BOOLEAN, polroles BIGINT[], polqual VARCHAR, "
                 "polwithcheck VARCHAR",
    "pg_statistic_ext": "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, "
                        "stxowner BIGINT, stxstattarget INTEGER, stxkeys INTEGER[], "
                        "stxkind VARCHAR[], stxexprs VARCHAR",
    "pg_publication": "oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, "
                      "pubinsert BOOLEAN, pubupdate BOOLEAN, pubdelete BOOLEAN, "
                      "pubtruncate BOOLEAN, pubviaroot BOOLEAN",
    "pg_publication_rel": "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, "
                          "prattrs INTEGER[]",
    "pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
    "pg_auth_members": "roleid BIGINT, member BIGINT, grantor BIGINT, admin_option BOOLEAN",
    "pg_foreign_table": "ftrelid BIGINT, ftserver BIGINT",
    "pg_partitioned_table": "partrelid BIGINT, partstrat VARCHAR",
    "pg_sequence": "seqrelid BIGINT, seqtypid BIGINT, seqstart BIGINT, seqincrement BIGINT, "
                   "seqmax BIGINT, seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN",
    "pg_matviews": "schemaname VARCHAR, matviewname VARCHAR, definition VARCHAR",
    "pg_views": "schemaname VARCHAR, viewname VARCHAR, viewowner VARCHAR, definition VARCHAR",
    "pg_tables": "schemaname VARCHAR, tablename VARCHAR, tableowner VARCHAR, "
                 "tablespace VARCHAR, hasindexes BOOLEAN, hasrules BOOLEAN, "
                 "hastriggers BOOLEAN, rowsecurity BOOLEAN",
    "pg_stat_activity": "datid BIGINT, datname VARCHAR, pid INTEGER, usename VARCHAR, "
                        "application_name VARCHAR, state VARCHAR, query VARCHAR",
}
_INFO: dict[str, str] = {
    "schemata": "catalog_name VARCHAR, schema_name VARCHAR, schema_owner VARCHAR, "
                "default_character_set_catalog VARCHAR, default_character_set_schema VARCHAR, "
                "default_character_set_name VARCHAR, sql_path VARCHAR",
    "tables": "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
              "table_type VARCHAR, self_referencing_column_name VARCHAR, "
              "reference_generation VARCHAR, user_defined_type_catalog VARCHAR, "
              "user_defined_type_schema VARCHAR, user_defined_type_name VARCHAR, "
              "is_insertable_into VARCHAR, is_typed VARCHAR, commit_action VARCHAR",
    "columns": "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
               "column_name VARCHAR, ordinal_position INTEGER, column_default VARCHAR, "
               "is_nullable VARCHAR, data_type VARCHAR, character_maximum_length INTEGER, "
               "character_octet_length INTEGER, numeric_precision INTEGER, "
               "numeric_precision_radix INTEGER, numeric_scale INTEGER, "
               "datetime_precision INTEGER, udt_catalog VARCHAR, udt_schema VARCHAR, "
               "udt_name VARCHAR, is_identity VARCHAR, is_generated VARCHAR, "
               "is_updatable VARCHAR",
    "views": "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
             "view_definition VARCHAR",
    "table_constraints": "constraint_catalog VARCHAR, constraint_schema VARCHAR, "
                         "constraint_name VARCHAR, table_catalog VARCHAR, table_schema VARCHAR, "
                         "table_name VARCHAR, constraint_type VARCHAR",
    "key_column_usage": "constraint_catalog VARCHAR, constraint_schema VARCHAR, "
                        "constraint_name VARCHAR, table_catalog VARCHAR, table_schema VARCHAR, "
                        "table_name VARCHAR, column_name VARCHAR, ordinal_position INTEGER",
    "routines": "routine_catalog VARCHAR, routine_schema VARCHAR, routine_name VARCHAR, "
                "routine_type VARCHAR, data_type VARCHAR",
}

#: PostgreSQL functions drivers call, as DuckDB macros in schema pgcat (``pg_catalog.f`` is
#: rewritten to ``pgcat.f``; unqualified names are rewritten too).
_MACROS = {
    "pg_get_userbyid(x)": "'statcube'",
    "pg_table_is_visible(x)": "true",
    "pg_type_is_visible(x)": "true",
    "pg_get_expr(a, b)": "NULL::VARCHAR",
    "pg_get_expr(a, b, c)": "NULL::VARCHAR",
    "obj_description(a)": "NULL::VARCHAR",
    "obj_description(a, b)": "(SELECT description FROM pgcat.pg_description d WHERE "
                             "d.objoid = a AND d.objsubid = 0 LIMIT 1)",
    "col_description(a, b)": "(SELECT description FROM pgcat.pg_description d WHERE "
                             "d.objoid = a AND d.objsubid = b LIMIT 1)",
    "shobj_description(a, b)": "NULL::VARCHAR",
    "has_schema_privilege(a, b)": "true", "has_schema_privilege(a, b, c)": "true",
    "has_table_privilege(a, b)": "true", "has_table_privilege(a, b, c)": "true",
    "has_database_privilege(a, b)": "true", "has_database_privilege(a, b, c)": "true",
    "pg_has_role(a, b)": "true", "pg_has_role(a, b, c)": "true",
    "pg_encoding_to_char(x)": "'UTF8'",
    "pg_get_indexdef(a)": "NULL::VARCHAR", "pg_get_indexdef(a, b, c)": "NULL::VARCHAR",
    "pg_get_constraintdef(a)": "NULL::VARCHAR", "pg_get_constraintdef(a, b)": "NULL::VARCHAR",
    "pg_get_viewdef(a)": "NULL::VARCHAR", "pg_get_viewdef(a, b)": "NULL::VARCHAR",
    "pg_get_triggerdef(a)": "NULL::VARCHAR", "pg_get_triggerdef(a, b)": "NULL::VARCHAR",
    "pg_get_function_result(a)": "NULL::VARCHAR",
    "pg_get_function_arguments(a)": "NULL::VARCHAR",
    "pg_relation_size(a)": "0::BIGINT", "pg_total_relation_size(a)": "0::BIGINT",
    "pg_size_pretty(a)": "'0 bytes'",
    "pg_is_in_recovery()": "false",
    "pg_postmaster_start_time()": "NULL::TIMESTAMP",
    "pg_backend_pid()": "0",
    "txid_current()": "0::BIGINT",
    "array_lower(a, b)": "1",
    "array_upper(a, b)": "len(a)",
    "format_type(a, b)": "(SELECT f FROM pgcat.statcube_format_type t WHERE t.oid = a)",
    "quote_ident(a)": "'\"' || a || '\"'",
    "pg_get_partkeydef(a)": "NULL::VARCHAR",
    "pg_tablespace_location(a)": "''",
    "pg_char_to_encoding(a)": "6",
    "to_regtype(a)": "(SELECT oid FROM pgcat.pg_type t WHERE t.typname = a LIMIT 1)",
    "to_regclass(a)": "(SELECT oid FROM pgcat.pg_class c WHERE c.relname = a LIMIT 1)",
    # cubes have no sequences, identity columns or defaults (SQLAlchemy's get_columns asks)
    "pg_get_serial_sequence(a, b)": "NULL::VARCHAR",
    "pg_get_statisticsobjdef_columns(a)": "NULL::VARCHAR",
    "pg_relation_is_publishable(a)": "false",
}


#: The longest a catalog statement may run (driver catalog queries take milliseconds).
CATALOG_SECONDS = 10.0


class Running:
    """The DuckDB connection a session's statement is running on, so that a cancel request
    (which arrives on another connection, in another thread) interrupts the query itself
    rather than only no longer waiting for it. ``on`` registers a connection for the
    duration of one statement; ``cancel`` interrupts it, or makes the next ``on`` refuse
    to start when the statement has not reached its query yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self.cancelled = False

    def reset(self) -> None:
        with self._lock:
            self.cancelled = False

    @staticmethod
    def error() -> SqlError:
        return SqlError("canceling statement due to user request", "57014")

    @contextlib.contextmanager
    def on(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
        with self._lock:
            if self.cancelled:
                raise self.error()
            self._cursor = cursor
        try:
            yield
        finally:
            with self._lock:
                self._cursor = None

    def cancel(self) -> bool:
        """Interrupt the running query; True if one was running (it will stop soon)."""
        with self._lock:
            self.cancelled = True
            if self._cursor is None:
                return False
            self._cursor.interrupt()
            return True


@dataclass(frozen=True)
class Context:
    """What session-dependent functions return (substituted before DuckDB sees the text)."""

    user: str
    database: str
    schema: str
    search_path: tuple[str, ...]
    version: str
    settings: Mapping[str, str]


class Catalog:
    """The catalog for one set of visible releases (schemas) and their cube tables."""

    def __init__(self, schemas: Mapping[str, Sequence[CubeTable]]) -> None:
        self.schemas = dict(schemas)
        self.db = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        self._fill()
        self._seal()

    def _seal(self) -> None:
        """Clients' catalog SQL runs here as written, so this DuckDB must reach nothing but
        its own tables: no files (``read_text``, ``read_parquet`` and ``FROM 'file'`` would
        read the warehouse's raw rows or any file the server can), no extensions, no
        network; and no client can change that back (``lock_configuration``). Its memory
        and threads are bounded so one catalog statement cannot starve the gate."""
        self.db.execute("SELECT json_object('a', 1)").fetchall()  # json loaded before sealing
        for setting in ("enable_external_access = false", "autoload_known_extensions = false",
                        "autoinstall_known_extensions = false", "allow_community_extensions "
                        "= false", "python_enable_replacements = false",
                        "memory_limit = '256MB'", "threads = 1",
                        "lock_configuration = true"):
            self.db.execute(f"SET {setting}")

    def _fill(self) -> None:
        db = self.db
        db.execute("CREATE SCHEMA pgcat")
        db.execute("CREATE SCHEMA infschema")
        for name, cols in _TABLES.items():
            db.execute(f"CREATE TABLE pgcat.{name} ({cols})")
        for name, cols in _INFO.items():
            db.execute(f"CREATE TABLE infschema.{name} ({cols})")
        db.execute("CREATE TABLE pgcat.statcube_format_type (oid BIGINT, f VARCHAR)")
        overloads: dict[str, list[str]] = {}
        for sig, body in _MACROS.items():
            name, args = sig.split("(", 1)
            overloads.setdefault(name, []).append(f"({args} AS {body}")
        for name, bodies in overloads.items():
            db.execute(f"CREATE MACRO pgcat.{name}" + ", ".join(bodies))
        ins: dict[str, list[tuple[Any, ...]]] = {}

        def add(table: str, *row: Any) -> None:
            ins.setdefault(table, []).append(row)

        namespaces = [(NS_CATALOG, "pg_catalog"), (NS_PUBLIC, "public"),
                      (NS_INFO, "information_schema")]
        for i, schema in enumerate(self.schemas):
            namespaces.append((16384 + i, schema))
        for oid, name in namespaces:
            add("pg_namespace", oid, name, 10, None)
            add("schemata", "statcube", name, "statcube", None, None, "UTF8", None)
        for tname, (oid, length, cat, arr) in TYPES.items():
            add("pg_type", oid, tname, NS_CATALOG, 10, length, length > 0, "b", cat, False,
                True, ",", 0, None, 0, arr, f"{tname}in", f"{tname}out", f"{tname}recv",
                f"{tname}send", "-", "-", "-", "i", "p", False, 0, -1, 0, 0, None, None, None)
            if arr:
                add("pg_type", arr, f"_{tname}", NS_CATALOG, 10, -1, False, "b", "A", False,
                    True, ",", 0, None, oid, 0, "array_in", "array_out", "array_recv",
                    "array_send", "-", "-", "-", "i", "x", False, 0, -1, 0, 0, None, None,
                    None)
            add("statcube_format_type", oid, FORMAT.get(tname, tname))
        add("pg_am", 2, "heap", "heap_tableam_handler", "t")
        add("pg_database", 16380, "statcube", 10, 6, "C.UTF-8", "C.UTF-8", False, True, -1,
            1663, None, "c", None, None)
        add("pg_roles", 10, "statcube", False, True, False, False, True, False, -1, None,
            None, False, None)
        add("pg_user", "statcube", 10, False, False, False, False, None, None, None)
        add("pg_tablespace", 1663, "pg_default", 10)
        for name, oid in CATALOG_OIDS.items():
            add("pg_class", oid, name, NS_CATALOG, 0, 0, 10, 2, oid, 0, 0, 0.0, 0, 0, False,
                False, "p", "r", 0, 0, False, False, False, False, False, True, "n", False, 0,
                0, 0, None, None, None, False)
        rel = 20000
        for i, (schema, tables) in enumerate(self.schemas.items()):
            ns = 16384 + i
            for t in tables:
                rel += 1
                add("pg_class", rel, t.name, ns, 0, 0, 10, 2, rel, 0, 0, -1.0, 0, 0, False,
                    False, "p", "r", len(t.columns), 0, False, False, False, False, False,
                    True, "d", False, 0, 0, 0, None, None, None, False)
                add("pg_description", rel, 1259, 0,
                    f"{t.cube.label}: protected aggregates (cell key method); "
                    "group by attributes, never raw rows")
                add("tables", "statcube", schema, t.name, "BASE TABLE", None, None, None,
                    None, None, "NO", "NO", None)
                add("pg_tables", schema, t.name, "statcube", None, False, False, False, False)
                for n, c in enumerate(t.columns, start=1):
                    oid, length = TYPES[c.type][0], TYPES[c.type][1]
                    add("pg_attribute", rel, c.name, oid, -1, length, n, 0, -1, -1,
                        length > 0, "i", "p", "", False, False, False, "", "", False, True, 0,
                        0, None, None, None, None)
                    add("pg_description", rel, 1259, n, c.description)
                    numeric = c.type in ("int8", "float8")
                    add("columns", "statcube", schema, t.name, c.name, n, None, "YES",
                        FORMAT[c.type], None, None if numeric else 1073741824,
                        (64 if c.type == "int8" else 53) if numeric else None,
                        2 if numeric else None, 0 if c.type == "int8" else None, None,
                        "statcube", "pg_catalog", c.type, "NO", "NEVER", "NO")
        for table, rows in ins.items():
            schema = "infschema" if table in _INFO else "pgcat"
            marks = ",".join("?" * len(rows[0]))
            self.db.executemany(f"INSERT INTO {schema}.{table} VALUES ({marks})", rows)

    def run(self, sql: str, ctx: Context, running: Running | None = None,
            seconds: float = CATALOG_SECONDS) -> ResultSet:
        """Answer a catalog statement (text already free of parameters). ``running`` lets a
        cancel request interrupt it; after ``seconds`` it is interrupted anyway (catalog SQL
        is the client's own, and a pool thread is shared by every connection)."""
        text = rewrite(sql, ctx)
        with self._lock:
            cur = self.db.cursor()
        timer = threading.Timer(seconds, cur.interrupt)
        timer.daemon = True
        timer.start()
        try:
            with running.on(cur) if running is not None else contextlib.nullcontext():
                try:
                    cur.execute(text)
                except duckdb.InterruptException:
                    raise
                except duckdb.Error as first:
                    import sqlglot

                    try:
                        alt = sqlglot.transpile(text, read="postgres", write="duckdb")[0]
                        cur.execute(alt)
                    except duckdb.InterruptException:
                        raise
                    except Exception:
                        raise SqlError(f"statcube's catalog cannot answer this statement: "
                                       f"{str(first).splitlines()[0]}", "0A000",
                                       hint="statcube answers catalog queries for browsing "
                                            "and SELECTs over one cube table") from None
                desc = cur.description or []
                rows = cur.fetchall()
        except duckdb.InterruptException:
            if running is not None and running.cancelled:
                raise running.error() from None
            raise SqlError(f"canceling statement due to statement timeout: catalog "
                           f"statements may run {seconds:g} s", "57014") from None
        finally:
            timer.cancel()
            cur.close()
        renames = literal_names(ctx)
        names = tuple(renames.get(str(d[0]), str(d[0])) for d in desc)
        types = tuple(_pg_type(str(d[1])) for d in desc)
        return ResultSet(names, types, [tuple(r) for r in rows])


def _pg_type(duck: str) -> str:
    d = duck.upper()
    if d in ("BIGINT", "HUGEINT", "UBIGINT"):
        return "int8"
    if d in ("INTEGER", "UINTEGER"):
        return "int4"
    if d in ("SMALLINT", "TINYINT", "USMALLINT", "UTINYINT"):
        return "int2"
    if d == "BOOLEAN":
        return "bool"
    if d in ("DOUBLE", "FLOAT") or d.startswith("DECIMAL"):
        return "float8"
    if d == "DATE":
        return "date"
    if d.startswith("TIMESTAMP"):
        return "timestamp"
    return "text"


#: ``'pg_class'::regclass`` and ``CAST('pg_catalog.pg_class' AS REGCLASS)``: a relation's oid.
_REGCLASS = re.compile(r"(?i)(?:'([^']+)'\s*::\s*(?:\"?pg_catalog\"?\s*\.\s*)?regclass\b|"
                       r"CAST\s*\(\s*'([^']+)'\s+AS\s+(?:\"?pg_catalog\"?\s*\.\s*)?"
                       r"regclass\s*\))")
_REG = re.compile(r"(?i)::\s*(?:\"?pg_catalog\"?\s*\.\s*)?(regclass|regproc|regprocedure|"
                  r"regtype|regnamespace|oid|name|int2vector|oidvector|\"char\")(?![\w.])")
#: ``CAST(x AS regclass)`` (SQLAlchemy's spelling of the same casts).
_CAST_REG = re.compile(r"(?i)\bAS\s+(?:\"?pg_catalog\"?\s*\.\s*)?(regclass|regtype|regnamespace|"
                       r"regproc|oid)\s*\)")
#: PostgreSQL's regular-expression match operators: ``x ~ 'p'`` finds ``p`` anywhere in
#: ``x``, where DuckDB's ``~`` must match all of ``x`` (JDBC's ``nspname !~ '^pg_'`` would
#: silently list pg_catalog as a user schema). The left side is a column or a call; the
#: right side the pattern literal drivers send.
_REGEX_OP = re.compile(r"(?i)((?:[\w\"]+\s*\.\s*)*[\w\"]+(?:\s*\([^()]*\))?)\s*(!?)~(\*?)\s*"
                       r"('(?:[^']|'')*')")
_UNQUALIFIED = re.compile(r"(?<![\w.\"])(" + "|".join(sorted(_TABLES, key=len, reverse=True))
                          + r")\b")


def rewrite(sql: str, ctx: Context) -> str:
    """PostgreSQL catalog SQL → the same statement over statcube's catalog in DuckDB."""
    def regclass(m: re.Match[str]) -> str:
        name = (m.group(1) or m.group(2)).split(".")[-1].strip('"')
        if name in CATALOG_OIDS:
            return str(CATALOG_OIDS[name])
        return f"(SELECT min(oid) FROM pgcat.pg_class WHERE relname = {_quote(name)})"

    text = _REGCLASS.sub(regclass, sql)
    text = _REG.sub(lambda m: "::BIGINT" if m.group(1).lower() in ("oid", "regclass",
                                                                    "regtype", "regnamespace")
                    else "::VARCHAR", text)
    text = re.sub(r"(?i)OPERATOR\s*\(\s*pg_catalog\s*\.\s*([^)\s]+)\s*\)", r"\1", text)
    text = _CAST_REG.sub("AS BIGINT)", text)
    text = _REGEX_OP.sub(_regex_call, text)
    text = _ANY_COLUMN.sub(r"list_contains(\2, \1)", text)
    text = _SERIES_ALIAS.sub(lambda m: m.group(0) if m.group(3).upper() in _KEYWORDS
                             else f"{m.group(1)} {m.group(2)} {m.group(3)}({m.group(3)})", text)
    # SQLAlchemy's get_columns builds identity options with json_build_object (DuckDB: json_object)
    text = re.sub(r"(?i)(?<![\w.])(?:pg_catalog\s*\.\s*)?json_build_object\s*\(", "json_object(",
                  text)
    text = re.sub(r"(?i)\s+COLLATE\s+pg_catalog\s*\.\s*\"?default\"?", "", text)
    known = set(_TABLES) | {f.split("(")[0] for f in _MACROS}

    def qualify(m: re.Match[str]) -> str:
        if m.group(1).lower() == "information_schema":
            return "infschema."
        return "pgcat." if m.group(2) in known else ""

    text = re.sub(r'(?i)\b"?(pg_catalog|information_schema)"?\s*\.\s*(?=(\w*))', qualify,
                  text)
    text = _UNQUALIFIED.sub(r"pgcat.\1", text)
    for fn in sorted({f.split("(")[0] for f in _MACROS}, key=len, reverse=True):
        text = re.sub(rf"(?i)(?<![\w.]){fn}\s*\(", f"pgcat.{fn}(", text)
    schemas = "[" + ", ".join(_quote(s) for s in ("pg_catalog", *ctx.search_path)) + "]"
    subs = {
        r"current_schemas\s*\(\s*(true|false)\s*\)": schemas,
        r"current_schema\s*\(\s*\)": _quote(ctx.schema),
        r"\bcurrent_schema\b": _quote(ctx.schema),
        r"current_database\s*\(\s*\)": _quote(ctx.database),
        r"\bcurrent_catalog\b": _quote(ctx.database),
        r"\b(current_user|session_user|current_role)\b": _quote(ctx.user),
        r"\bversion\s*\(\s*\)": _quote(ctx.version),
        r"\bpg_catalog\.version\s*\(\s*\)": _quote(ctx.version),
        r"\binet_server_port\s*\(\s*\)": "5432",
    }
    for pattern, value in subs.items():
        text = re.sub(r"(?i)(?:pgcat\.)?" + pattern, value.replace("\\", "\\\\"), text)
    text = re.sub(r"(?i)(?:pgcat\.)?current_setting\s*\(\s*'([^']*)'\s*(?:,\s*\w+\s*)?\)",
                  lambda m: _quote(ctx.settings.get(m.group(1).lower(), "")), text)
    return text


#: ``'d' = any(stxkind)`` over an array column (DuckDB reads ``ANY(column)`` as a subquery).
_ANY_COLUMN = re.compile(r"(?i)('(?:[^']|'')*'|[\w.]+)\s*=\s*any\s*\(\s*([a-z_][\w.]*)\s*\)")


#: ``FROM generate_series(…) s`` names the column ``s`` too in PostgreSQL (psql's ``\\d``
#: indexes an array with it); DuckDB needs the column alias spelled out.
_SERIES_ALIAS = re.compile(r"(?i)((?:FROM|,|JOIN)\s*(?:pg_catalog\s*\.\s*)?generate_series\s*"
                           r"\((?:[^()]|\([^()]*\))*\))\s+(AS\s+|)(\w+)\b(?!\s*\()")
_KEYWORDS = frozenset({"WHERE", "JOIN", "ON", "ORDER", "GROUP", "LIMIT", "UNION", "CROSS",
                       "LEFT", "RIGHT", "INNER", "FULL", "NATURAL", "HAVING", "OFFSET",
                       "WINDOW", "EXCEPT", "INTERSECT", "USING", "LATERAL"})


def _regex_call(m: re.Match[str]) -> str:
    """``x ~ 'p'`` → ``regexp_matches(x, 'p')`` (``!~`` negated, ``~*`` case-insensitive)."""
    flags = ", 'i'" if m.group(3) else ""
    call = f"regexp_matches({m.group(1)}, {m.group(4)}{flags})"
    return f"NOT {call}" if m.group(2) else call


#: Column names PostgreSQL gives the functions :func:`rewrite` replaces by literals.
def literal_names(ctx: Context) -> dict[str, str]:
    return {_quote(ctx.version): "version", _quote(ctx.schema): "current_schema",
            _quote(ctx.database): "current_database", _quote(ctx.user): "current_user"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
