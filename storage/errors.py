"""The one error hierarchy that crosses layers.

    GatewayError
     └── TransientError   infrastructure fault: SMTP 451 4.3.0, `ingest` exit 75 (EX_TEMPFAIL)

Bad mail is never an exception: parsers return defects. Anything else that reaches the SMTP hooks is
treated as transient too (451), because a 5xx would tell the sender to give up on a message we lost.
"""


class GatewayError(Exception):
    pass


class TransientError(GatewayError):
    """Try again later: the store and the spool could not take the message."""


# SQLite primary result codes that mean "the database is unavailable now", not "this statement can never
# succeed" (https://sqlite.org/rescode.html): BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# PostgreSQL SQLSTATE classes of the same kind: connection exception, insufficient resources, operator
# intervention (admin shutdown, crash recovery), system error; plus serialization failure and deadlock.
_PG_OUTAGE_CLASSES = ("08", "53", "57", "58", "40")
_CLIENT_CONNECTION_WORDS = ("connection", "connect", "server closed", "timeout", "terminat")


def is_outage(exc: BaseException) -> bool:
    """Is this store error connection-level (retry later, the entry stays pending) rather than
    deterministic (the same statement fails the same way every time: the entry ends `processing_failed`
    after its attempts)? Issue 15: "too many SQL variables" is an OperationalError too, and counting it as
    an outage retried one message forever."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, (DisconnectionError, PoolTimeout)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return (sqlite_code & 0xFF) in _SQLITE_OUTAGE_CODES
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate)[:2] in _PG_OUTAGE_CLASSES
    # A client-side failure without a server's code (psycopg): only a lost or refused connection counts.
    message = str(orig).lower()
    return type(orig).__name__ == "OperationalError" and any(w in message for w in _CLIENT_CONNECTION_WORDS)
