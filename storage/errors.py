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
