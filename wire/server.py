"""The PostgreSQL v3 wire protocol over asyncio, for cube/sqlapi sessions.

Why our own implementation (see README, "SQL API"): the candidates on PyPI either stopped
being maintained (buenavista, last release 2024) or are young and bring their own runtime
and catalog (riffq 0.1), while what statcube needs is small and must be exact — the
HTTP key store for passwords, statcube's own catalog and gate, cancel, and SQLSTATEs.

Authentication is cleartext password (``AuthenticationCleartextPassword``): the password is
the API key, which the key store can check only in the clear (it holds HMACs of keys, not
the verifiers MD5 or SCRAM need). Use TLS (``sql_tls_cert``/``sql_tls_key``) beyond
loopback. The user name ``guest`` (or an empty password) is the guest role when guests are
allowed. Blocking work (the gate, the catalog) runs in a thread pool; the event loop only
reads and writes messages, so one slow query does not hold up other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cube.errors import StatcubeError, UnauthorizedError
from cube.sqlapi.catalog import TYPES
from cube.sqlapi.session import PG_VERSION, Caller, Session, SqlService, bind_parameters
from cube.sqlapi.surface import ResultSet, SqlError, sqlstate_of
from server.auth import GUEST, KeyStore, Principal

log = logging.getLogger("statcube.sql")

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608
#: How long a cancelled statement is waited for after its query was interrupted.
CANCEL_WAIT = 30.0


class ProtocolError(Exception):
    """The client broke the protocol: the connection is closed after a FATAL error."""


@dataclass
class Prepared:
    sql: str
    oids: list[int]


@dataclass
class Portal:
    sql: str
    result: ResultSet | None = None
    error: Exception | None = None
    formats: list[int] = field(default_factory=list)
    sent: int = 0


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        return (repr(value) if value == value else "NaN").encode()
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ").encode() if isinstance(value, datetime) else \
            value.isoformat().encode()
    if isinstance(value, (list, tuple)):
        return ("{" + ",".join("NULL" if v is None else str(v) for v in value) + "}").encode()
    return str(value).encode("utf-8")


def _binary(value: Any, typ: str) -> bytes | None:
    if value is None:
        return None
    if typ == "int8":
        return struct.pack("!q", int(value))
    if typ == "int4":
        return struct.pack("!i", int(value))
    if typ == "int2":
        return struct.pack("!h", int(value))
    if typ == "float8":
        return struct.pack("!d", float(value))
    if typ == "bool":
        return b"\x01" if value else b"\x00"
    return _text(value)


def row_description(rs: ResultSet, formats: list[int]) -> bytes:
    body = struct.pack("!h", len(rs.names))
    for i, (name, typ) in enumerate(zip(rs.names, rs.types, strict=True)):
        oid, length = TYPES.get(typ, TYPES["text"])[:2]
        fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        body += _cstr(name) + struct.pack("!ihihih", 0, 0, oid, length, -1, fmt)
    return _msg(b"T", body)


def data_row(values: tuple[Any, ...], types: tuple[str, ...], formats: list[int]) -> bytes:
    body = struct.pack("!h", len(values))
    for i, v in enumerate(values):
        fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        b = _binary(v, types[i]) if fmt == 1 else _text(v)
        body += struct.pack("!i", -1) if b is None else struct.pack("!i", len(b)) + b
    return _msg(b"D", body)


def error_response(exc: BaseException, severity: str = "ERROR") -> bytes:
    if isinstance(exc, StatcubeError) and (exc.public or exc.status < 500):
        code, message, hint = sqlstate_of(exc), exc.message, exc.hint
    else:
        log.exception("internal error in the SQL API", exc_info=exc)
        code, message, hint = "XX000", "internal error (logged on the server)", None
    body = b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(code) + b"M" + \
        _cstr(message)
    if hint:
        body += b"H" + _cstr(hint)
    return _msg(b"E", body + b"\x00")


def _values(body: bytes, pos: int, count: int, formats: list[int], oids: list[int]
            ) -> tuple[list[str | None], int]:
    out: list[str | None] = []
    for i in range(count):
        (n,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if n < 0:
            out.append(None)
            continue
        raw = body[pos:pos + n]
        pos += n
        fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        if fmt == 0:
            out.append(raw.decode("utf-8"))
            continue
        oid = oids[i] if i < len(oids) else 0
        if oid in (20, 21, 23, 26) and n in (2, 4, 8):
            out.append(str(int.from_bytes(raw, "big", signed=True)))
        elif oid == 701 and n == 8:
            out.append(repr(struct.unpack("!d", raw)[0]))
        elif oid == 700 and n == 4:
            out.append(repr(struct.unpack("!f", raw)[0]))
        elif oid == 16 and n == 1:
            out.append("true" if raw != b"\x00" else "false")
        else:
            out.append(raw.decode("utf-8"))
    return out, pos


class Connection:
    def __init__(self, server: PgServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.session: Session | None = None
        self.pid = 0
        self.secret = 0
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.failed = False  # extended protocol: skip to Sync after an error
        self.cancelled = False
        self.running: asyncio.Future[Any] | None = None

    async def read_exact(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def startup(self) -> bool:
        """SSL negotiation, startup packet, authentication. False: close the connection."""
        while True:
            (length,) = struct.unpack("!i", await self.read_exact(4))
            if not 8 <= length <= 10_000:
                raise ProtocolError("invalid startup packet length")
            body = await self.read_exact(length - 4)
            (code,) = struct.unpack_from("!i", body)
            if code == SSL_REQUEST:
                if self.server.tls is None:
                    self.writer.write(b"N")
                    await self.writer.drain()
                    continue
                self.writer.write(b"S")
                await self.writer.drain()
                await self.writer.start_tls(self.server.tls)
                continue
            if code == GSS_REQUEST:
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if code == CANCEL_REQUEST:
                pid, key = struct.unpack_from("!ii", body, 4)
                self.server.cancel(pid, key)
                return False
            if code != PROTOCOL_3:
                raise ProtocolError(f"unsupported protocol {code >> 16}.{code & 0xFFFF}")
            break
        parts = body[4:].split(b"\x00")
        params = {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)
                  if parts[i]}
        if self.server.require_tls and self.writer.get_extra_info("sslcontext") is None:
            self.writer.write(error_response(SqlError(
                "this server requires TLS (sslmode=require)", "28000"), "FATAL"))
            await self.writer.drain()
            return False
        user = params.get("user", "guest")
        try:
            principal = await self.authenticate(user)
        except UnauthorizedError as exc:
            self.writer.write(error_response(exc, "FATAL"))
            await self.writer.drain()
            return False
        caller = Caller(principal.role.value, principal.role.embargo_exempt,
                        self.server.max_cells(principal), user)
        self.session = await self.server.run(
            lambda: Session(self.server.service, caller, params.get("database", "statcube")))
        for k in ("application_name", "client_encoding", "datestyle", "timezone",
                  "extra_float_digits"):
            if k in params or k.title() in params:
                self.session.settings[k] = params.get(k, params.get(k.title(), ""))
        self.session.settings["client_encoding"] = "UTF8"
        self.pid, self.secret = self.server.register(self)
        out = _msg(b"R", struct.pack("!i", 0))
        for k, v in (("server_version", PG_VERSION), ("server_encoding", "UTF8"),
                     ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
                     ("TimeZone", "UTC"), ("integer_datetimes", "on"),
                     ("standard_conforming_strings", "on"), ("is_superuser", "off"),
                     ("IntervalStyle", "postgres"), ("session_authorization", user),
                     ("application_name", self.session.settings.get("application_name", "")),
                     ("default_transaction_read_only", "on")):
            out += _msg(b"S", _cstr(k) + _cstr(v))
        out += _msg(b"K", struct.pack("!ii", self.pid, self.secret))
        out += _msg(b"Z", b"I")
        self.writer.write(out)
        await self.writer.drain()
        return True

    async def authenticate(self, user: str) -> Principal:
        keys = self.server.keys
        if user == "guest" and self.server.allow_guests:
            return GUEST
        self.writer.write(_msg(b"R", struct.pack("!i", 3)))  # cleartext password
        await self.writer.drain()
        kind = await self.read_exact(1)
        (length,) = struct.unpack("!i", await self.read_exact(4))
        if kind != b"p" or not 4 <= length <= 10_000:
            raise UnauthorizedError("expected a password message")
        password = (await self.read_exact(length - 4)).rstrip(b"\x00").decode("utf-8", "replace")
        if not password:
            if self.server.allow_guests:
                return GUEST
            raise UnauthorizedError("a password (API key) is required")
        entry = keys.lookup(password) if keys.entries else None
        if entry is None:
            raise UnauthorizedError(f'password authentication failed for user "{user}": the '
                                    "password must be a valid API key (or connect as user "
                                    "guest without one)")
        return Principal(entry.role, entry.id)

    async def serve(self) -> None:
        try:
            if not await self.startup():
                return
            while True:
                head = await self.read_exact(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                if length < 4 or length > 64 * 1024 * 1024:
                    raise ProtocolError("invalid message length")
                body = await self.read_exact(length - 4)
                if kind == b"X":
                    return
                await self.dispatch(kind, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except ProtocolError as exc:
            self.writer.write(error_response(SqlError(str(exc), "08P01"), "FATAL"))
        finally:
            self.server.unregister(self)
            with contextlib.suppress(Exception):  # the peer may be gone already
                self.writer.close()

    async def execute(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the pool. A cancel request interrupts the statement's DuckDB query
        (Session.running) and waits for it to stop, so the pool thread is free again and
        the next statement of this connection never overlaps it; a statement that has no
        interruptible query stops being waited for."""
        self.cancelled = False
        if self.session is not None:
            self.session.running.reset()
        fut = asyncio.ensure_future(self.server.run(fn))
        self.running = fut
        try:
            while not fut.done():
                done, _ = await asyncio.wait({fut}, timeout=0.05)
                if self.cancelled and not done:
                    stopping = self.session is not None and self.session.running.cancel()
                    if stopping:
                        await asyncio.wait({fut}, timeout=CANCEL_WAIT)
                    # its outcome (often the cancel error itself) is no longer anyone's
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
                    raise SqlError("canceling statement due to user request", "57014")
            if self.cancelled:
                raise SqlError("canceling statement due to user request", "57014")
            return fut.result()
        finally:
            self.running = None

    async def dispatch(self, kind: bytes, body: bytes) -> None:
        w = self.writer
        if kind == b"Q":
            await self.simple(body.rstrip(b"\x00").decode("utf-8"))
            return
        if kind == b"S":
            self.failed = False
            w.write(_msg(b"Z", b"I"))
            await w.drain()
            return
        if kind == b"H":
            await w.drain()
            return
        if self.failed:
            return
        try:
            if kind == b"P":
                await self.parse(body)
            elif kind == b"B":
                await self.bind(body)
            elif kind == b"D":
                await self.describe(body)
            elif kind == b"E":
                await self.execute_portal(body)
            elif kind == b"C":
                what, name = body[:1], body[1:].rstrip(b"\x00").decode()
                (self.statements if what == b"S" else self.portals).pop(name, None)
                w.write(_msg(b"3"))
            elif kind in (b"d", b"c", b"f"):
                pass  # COPY data: never started
            else:
                raise ProtocolError(f"unknown message type {kind!r}")
        except ProtocolError:
            raise
        except Exception as exc:
            self.failed = True
            w.write(error_response(exc))
        await w.drain()

    async def simple(self, sql: str) -> None:
        assert self.session is not None
        session = self.session
        w = self.writer
        try:
            results = await self.execute(lambda: session.execute(sql))
            for rs in results:
                if rs.tag == "EMPTY":
                    w.write(_msg(b"I"))
                    continue
                if rs.names:
                    w.write(row_description(rs, [0]))
                    for r in rs.rows:
                        w.write(data_row(r, rs.types, [0]))
                w.write(_msg(b"C", _cstr(rs.command_tag)))
        except Exception as exc:
            w.write(error_response(exc))
        w.write(_msg(b"Z", b"I"))
        await w.drain()

    async def parse(self, body: bytes) -> None:
        name_end = body.index(b"\x00")
        name = body[:name_end].decode()
        q_end = body.index(b"\x00", name_end + 1)
        sql = body[name_end + 1:q_end].decode("utf-8")
        (n,) = struct.unpack_from("!h", body, q_end + 1)
        oids = list(struct.unpack_from(f"!{n}i", body, q_end + 3)) if n else []
        self.statements[name] = Prepared(sql, oids)
        self.writer.write(_msg(b"1"))

    async def bind(self, body: bytes) -> None:
        p_end = body.index(b"\x00")
        portal = body[:p_end].decode()
        s_end = body.index(b"\x00", p_end + 1)
        stmt = self.statements.get(body[p_end + 1:s_end].decode())
        if stmt is None:
            raise SqlError("prepared statement does not exist", "26000")
        pos = s_end + 1
        (nf,) = struct.unpack_from("!h", body, pos)
        pformats = list(struct.unpack_from(f"!{nf}h", body, pos + 2))
        pos += 2 + 2 * nf
        (nv,) = struct.unpack_from("!h", body, pos)
        values, pos = _values(body, pos + 2, nv, pformats, stmt.oids)
        (nr,) = struct.unpack_from("!h", body, pos)
        rformats = list(struct.unpack_from(f"!{nr}h", body, pos + 2))
        sql = bind_parameters(stmt.sql, values, stmt.oids) if values else stmt.sql
        self.portals[portal] = Portal(sql, formats=rformats)
        self.writer.write(_msg(b"2"))

    async def _result(self, portal: Portal) -> ResultSet:
        if portal.result is None:
            assert self.session is not None
            session = self.session
            results = await self.execute(lambda: session.execute(portal.sql))
            if len(results) != 1:
                raise SqlError("cannot insert multiple commands into a prepared statement",
                               "42601")
            portal.result = results[0]
        return portal.result

    async def describe(self, body: bytes) -> None:
        what, name = body[:1], body[1:].rstrip(b"\x00").decode()
        w = self.writer
        if what == b"S":
            stmt = self.statements.get(name)
            if stmt is None:
                raise SqlError("prepared statement does not exist", "26000")
            count = max((int(m) for m in _placeholders(stmt.sql)), default=0)
            oids = stmt.oids + [0] * (count - len(stmt.oids))
            oids = [o if o else 25 for o in oids]
            w.write(_msg(b"t", struct.pack(f"!h{len(oids)}i", len(oids), *oids)))
            try:
                probe = Portal(bind_parameters(stmt.sql, [None] * count, oids)
                               if count else stmt.sql)
                rs = await self._result(probe)
            except Exception:
                w.write(_msg(b"n"))
                return
            w.write(row_description(rs, [0]) if rs.names else _msg(b"n"))
            return
        portal = self.portals.get(name)
        if portal is None:
            raise SqlError("portal does not exist", "34000")
        rs = await self._result(portal)
        w.write(row_description(rs, portal.formats) if rs.names else _msg(b"n"))

    async def execute_portal(self, body: bytes) -> None:
        name_end = body.index(b"\x00")
        portal = self.portals.get(body[:name_end].decode())
        (max_rows,) = struct.unpack_from("!i", body, name_end + 1)
        if portal is None:
            raise SqlError("portal does not exist", "34000")
        rs = await self._result(portal)
        w = self.writer
        if rs.tag == "EMPTY":
            w.write(_msg(b"I"))
            return
        rows = rs.rows[portal.sent:]
        if max_rows > 0 and len(rows) > max_rows:
            for r in rows[:max_rows]:
                w.write(data_row(r, rs.types, portal.formats))
            portal.sent += max_rows
            w.write(_msg(b"s"))
            return
        for r in rows:
            w.write(data_row(r, rs.types, portal.formats))
        portal.sent = len(rs.rows)
        w.write(_msg(b"C", _cstr(rs.command_tag)))


def _placeholders(sql: str) -> list[str]:
    import re

    return re.findall(r"\$(\d+)", sql)


class PgServer:
    def __init__(self, service: SqlService, keys: KeyStore, max_cells: Callable[[Principal], int],
                 *, tls: ssl.SSLContext | None = None, require_tls: bool = False,
                 allow_guests: bool = True, threads: int = 8) -> None:
        self.service = service
        self.keys = keys
        self.max_cells = max_cells
        self.tls = tls
        self.require_tls = require_tls
        self.allow_guests = allow_guests
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="statcube-sql")
        self.connections: dict[int, Connection] = {}
        self._next_pid = 1000

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def register(self, conn: Connection) -> tuple[int, int]:
        self._next_pid += 1
        pid, key = self._next_pid, secrets.randbits(31)
        self.connections[pid] = conn
        return pid, key

    def unregister(self, conn: Connection) -> None:
        if self.connections.get(conn.pid) is conn:
            del self.connections[conn.pid]

    def cancel(self, pid: int, key: int) -> None:
        conn = self.connections.get(pid)
        if conn is not None and secrets.compare_digest(conn.secret.to_bytes(4, "big"),
                                                       key.to_bytes(4, "big", signed=True)):
            conn.cancelled = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(self, reader, writer).serve()

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port, limit=1 << 20)
