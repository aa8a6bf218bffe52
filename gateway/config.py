"""The gateway's configuration: one frozen object, validated once at start.

Sources, weakest first: built-in defaults (a newcomer's localhost setup), the TOML file
(`--config`, `ABUSE_GATEWAY_CONFIG`, or `/etc/abuse-gateway/gateway.toml` when it exists), then
`ABUSE_GATEWAY_<SECTION>_<KEY>` environment variables (lists as JSON or comma-separated). A bad value raises
`ConfigError` naming the key, and the CLI exits 2 with it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path("/etc/abuse-gateway/gateway.toml")
ENV_PREFIX = "ABUSE_GATEWAY_"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hostport(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _ip_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """`trusted_proxies`: each an IP address or a network (10.0.0.0/8), for the desk and the status page."""
    import ipaddress

    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network") from exc
    return value


class SmtpConfig(_Section):
    listen: tuple[str, ...] = ("127.0.0.1:2525",)
    hostname: str = "localhost"
    # 25 MiB, the common provider default; SIZE is advertised (RFC 1870) so senders learn it before DATA.
    max_message_bytes: int = Field(default=26_214_400, gt=0)
    # RFC 5321 §4.5.3.1.8 asks servers to accept at least 100; a report needs few, a spam run many.
    max_recipients: int = Field(default=50, gt=0)
    # Each session holds up to 256 KB of DATA in memory (beyond that a temporary file in the spool
    # directory: gateway/data.py), and large messages are read back under a 64 MB budget.
    # A full listener gives a newcomer the longest-idle session of the client holding the most (smtp.py).
    max_sessions: int = Field(default=200, gt=0)
    # Per client: an IPv4 address or an IPv6 /64.
    max_sessions_per_ip: int = Field(default=20, gt=0)
    # Idle timeout (RFC 5321 §4.5.3.2 suggests 5 minutes), counted from the last command that moves the
    # transaction (NOOP, RSET, HELP do not), and a hard cap on a whole session.
    idle_timeout: float = Field(default=300.0, gt=0)
    session_deadline: float = Field(default=1800.0, gt=0)
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    # Listener processes on the same addresses (SO_REUSEPORT; `serve --workers`): gateway/listeners.py.
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_hostport(v) for v in value)

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            raise ValueError(f"tls_cert and tls_key go together: {missing} is not set")
        return self


class IntakeConfig(_Section):
    # Empty means "abuse@ at any domain": a newcomer's default. Production names its addresses.
    addresses: tuple[str, ...] = ()
    case_prefix: str = Field(default="ABU", pattern=r"^[A-Z][A-Z0-9]{1,9}$")
    # A message that fails processing this many times is stored as `processing_failed` (Mailman's shunt).
    max_attempts: int = Field(default=3, gt=0)
    processing_timeout: float = Field(default=30.0, gt=0)
    # The address space of the process that prepares messages (RLIMIT_AS, gateway/preparer.py): a message
    # that needs more ends `processing_failed` instead of growing intake until the OOM killer picks.
    prepare_memory_mb: int = Field(default=1024, ge=0)  # 0: no cap
    # Decoded text beyond this is kept raw but not escaped, defanged or searched (a `text_truncated` defect).
    max_text_chars: int = Field(default=1024 * 1024, ge=1024)
    # "process": parsing and the case transaction run in a child process, off the SMTP loop's GIL.
    # "thread": in the listener's process (one process to debug; what the in-process tests use).
    mode: Literal["process", "thread"] = "process"
    # How many intake processes ("process" mode). Claims are conditional (SKIP LOCKED on PostgreSQL), so
    # they share the inbox safely; more than one pays off when the backlog grows under a flood and there
    # is a core to spare (on SQLite they still take turns at the single write lock).
    processes: int = Field(default=1, ge=1, le=64)
    # Machine reports about the same source and category within this many seconds join one open case
    # (AbuseIO's incident → ticket model); 0 opens a case per report. People's reports never merge.
    machine_report_group_window: float = Field(default=86_400.0, ge=0)
    # A person's new report (no case ID in it) is linked — never merged — to the same reporter's open
    # cases opened within this many days, so "I forgot one more password" is seen beside the first
    # report; the desk merges with `cases merge`. 0 turns linking off.
    related_days: float = Field(default=14.0, ge=0)

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if address.count("@") != 1 or "+" in address.partition("@")[0]:
                raise ValueError(f"{address!r} is not a plain local@domain address")
        return tuple(a.lower() for a in value)


# The stores the gateway is built and tested for (storage/engine.py); anything else fails at first use.
SUPPORTED_STORES = ("sqlite", "postgresql")


class StoreConfig(_Section):
    url: str = "sqlite:///var/cases.db"
    spool_dir: str = "var/spool"
    # How long a commit may be retried before the message is spooled instead (well under SMTP's
    # 10-minute DATA timeout, RFC 5321 §4.5.3.2.6).
    commit_budget: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("is not a database URL (sqlite:///path or postgresql+psycopg://…)") from None
        if backend not in SUPPORTED_STORES:
            raise ValueError(f"{backend!r} is not supported: use sqlite:///path or postgresql+psycopg://…")
        return value

    # Group commit: how long the writer waits for more messages to share one transaction and fsync.
    group_commit_ms: float = Field(default=2.0, ge=0)


class ConfirmConfig(_Section):
    enabled: bool = True
    from_: str = Field(default="abuse@localhost", alias="from")
    smarthost: str | None = None
    smarthost_user: str | None = None
    smarthost_password: str | None = None
    starttls: bool = False
    outbox_dir: str = "var/outbox"
    per_address_per_hour: int = Field(default=5, ge=0)
    # Caps (issue 15): per normalised mailbox (plus-tag and, for gmail.com, dots removed); per registrable
    # domain *counted per client network*, so a forged flood from one network cannot mute that domain's real
    # reporters sending from elsewhere; and per client network over all domains.
    per_domain_per_hour: int = Field(default=50, ge=0)
    per_network_per_hour: int = Field(default=200, ge=0)
    network_prefix_v4: int = Field(default=24, ge=8, le=32)
    network_prefix_v6: int = Field(default=64, ge=16, le=128)
    secret_file: str = "var/reply-token.key"
    old_secret_files: tuple[str, ...] = ()
    # Only {case_id} may appear: a confirmation never carries text from the report (issue 4).
    subject_template: str = "[{case_id}] We received your report"
    # The language of confirmations when the report gives no usable clue (issue 21).
    default_language: str = "en"

    # Confirm only senders SPF or an aligned DKIM signature vouches for (issue 22); no backscatter.
    require_authenticated: bool = True

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("subject_template")
    @classmethod
    def _subject_template(cls, value: str) -> str:
        import string

        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if fields != {"case_id"}:
            raise ValueError("must contain {case_id} and no other placeholder")
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        local, at, domain = value.partition("@")
        broken = any(c.isspace() or ord(c) < 32 for c in value) or "@" in domain
        # A domain has a dot; `localhost` is the built-in development default.
        if not at or not local or broken or ("." not in domain and domain != "localhost"):
            raise ValueError(f"{value!r} is not an address (local@domain)")
        return value

    @field_validator("smarthost")
    @classmethod
    def _smarthost(cls, value: str | None) -> str | None:
        return None if not value else _hostport(value)


class MetricsConfig(_Section):
    # host:port for the Prometheus /metrics endpoint; off unless set (127.0.0.1:9325 is the usual choice).
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if not value else _hostport(value)


# 18 U.S.C. §2258A(h) as amended by the REPORT Act (2024): a provider preserves a report for one year.
CSAM_MIN_PRESERVE_DAYS = 365


class CsamConfig(_Section):
    """Child sexual abuse material (issue 19): how long a mark preserves a case, and the signals that mark
    a case `possible_csam` (never `csam`: a person confirms)."""

    # How long a CSAM mark or possible-CSAM signal keeps a case from `purge`, from the moment it is placed.
    # Longer is allowed (a prosecutor's request); shorter is refused, whatever the operator writes.
    preserve_days: int = Field(default=CSAM_MIN_PRESERVE_DAYS, ge=CSAM_MIN_PRESERVE_DAYS)
    # Wordings looked for in the subject and text of a person's report, *added* to the built-in ones
    # (parsers/csam_terms.py: eight languages); a match is the signal `terms:custom`. Term syntax: a plain
    # wording matched word-bounded, a trailing `*` for a stem. Adding is the default because a desk that
    # replaces the list to add one local word would silently lose the other languages.
    terms: tuple[str, ...] = ()
    # false: only `terms` are looked for (a desk whose own list already covers what it needs).
    default_terms: bool = True
    # Local known-material lists (MD5, SHA-1, SHA-256: one hex per line, or CSV with a header naming the
    # columns md5/sha1/sha256/pdq and label). A PDQ list without a header is named `pdq:/path`. Re-read
    # on SIGHUP. Empty: no hash matching (attachments are still hashed and stored).
    hash_lists: tuple[str, ...] = ()
    # A PDQ hash within this Hamming distance (of 256 bits) matches: 31 is the threshold Meta publishes.
    pdq_distance: int = Field(default=31, ge=0, le=128)

    @field_validator("hash_lists")
    @classmethod
    def _lists_exist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from parsers.hash_lists import split_spec

        for spec in value:
            path = split_spec(spec)[1]
            if not Path(path).is_file():
                raise ValueError(f"{path!r} is not a readable file")
        return value


class WebConfig(_Section):
    """The desk (`abuse-gateway web`, issue 20): staff only, never inside the SMTP process."""

    # host:port of the desk's HTTP server; staff only: keep it on loopback behind a TLS proxy.
    listen: str = "127.0.0.1:8025"
    # How long a login lasts, in seconds or with a unit (90m, 12h, 7d); a shift and a bit.
    session_ttl: float = 43_200.0
    # An SSO proxy (oauth2-proxy and the like) names the user in this header (X-Forwarded-User, …); it is
    # believed only from `trusted_proxies`, and the user must exist in `abuse-gateway users` and be enabled.
    trusted_user_header: str | None = None
    # Addresses or networks of the reverse proxies whose X-Forwarded-For/-Proto and user header count.
    trusted_proxies: tuple[str, ...] = ()
    # Cookies with `Secure`: "auto" when the request came over https (directly, or from a trusted proxy
    # saying X-Forwarded-Proto: https), or always/never.
    secure_cookies: Literal["auto"] | bool = "auto"
    # Failed logins allowed per user name and per client address within `login_window` seconds.
    login_max_failures: int = Field(default=5, ge=1)
    login_window: float = Field(default=900.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _web_listen(cls, value: str) -> str:
        return _hostport(value)

    @field_validator("session_ttl", "login_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if isinstance(value, str) and value[-1:] in units and value[:-1].strip().isdigit():
            return float(value[:-1]) * units[value[-1]]
        return value

    @field_validator("session_ttl")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _ip_networks(value)

    @field_validator("trusted_user_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+", value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value or None


# --- the desk's keys end here ---


class StatusConfig(_Section):
    """The reporters' status page (`abuse-gateway status-page`, issue 21): Internet-facing, no content."""

    listen: str = "127.0.0.1:8026"
    # The public root of the status page (e.g. "https://status.abuse.example"); when set, confirmations and
    # notices link `<base_url>/s/<token>`. Unset: no link is given out (the page still answers).
    base_url: str | None = None
    # Per client (an IPv4 address, an IPv6 /64), an in-process token bucket: this many requests a minute,
    # bursts of `rate_burst`; beyond it, 429. Behind a reverse proxy every client looks the same unless the
    # proxy's address is listed in `trusted_proxies` (then X-Forwarded-For's last hop is the client).
    rate_per_minute: int = Field(default=30, ge=1)
    rate_burst: int = Field(default=10, ge=1)
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("listen")
    @classmethod
    def _status_listen(cls, value: str) -> str:
        return _hostport(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _ip_networks(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")) or any(c in value for c in " \t\r\n<>\"'{}"):
            raise ValueError("must be an http(s) URL without spaces or quotes")
        return value.rstrip("/")


# --- the status page's keys end here ---


class ReplyConfig(_Section):
    """Answers from the desk to reporters (`cases reply`, issue 21)."""

    # Overrides of the gateway's words to reporters (issue 21), one directory for all of them:
    # `<name>.txt` / `<name>.<lang>.txt` are reply templates (`cases reply --template NAME`; first line
    # `Subject: …`), `<lang>.toml` overrides any key of the shipped texts (gateway/texts/<lang>.toml:
    # confirmation, acknowledgement, receipt, state notices, status page) for that language.
    templates_dir: str | None = None


# --- the reply keys end here ---


class DkimConfig(_Section):
    """Signing of every outbound message (issue 22): unsigned only when no selector is configured."""

    # The RSA (rsa-sha256) key, published at `<selector>._domainkey.<domain>`; `dkim keygen` makes both.
    selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    key_file: str | None = None
    # The signing domain (d=); empty: the domain of [confirm] from, so DMARC aligns.
    domain: str | None = None
    # An ed25519-sha256 signature beside the RSA one (RFC 8463); receivers that know it check both.
    ed25519_selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    ed25519_key_file: str | None = None

    @model_validator(mode="after")
    def _pairs(self) -> DkimConfig:
        for selector, key in (("selector", "key_file"), ("ed25519_selector", "ed25519_key_file")):
            if bool(getattr(self, selector)) != bool(getattr(self, key)):
                missing = key if getattr(self, selector) else selector
                raise ValueError(f"{selector} and {key} go together: {missing} is not set")
        if self.ed25519_selector and not self.selector:
            raise ValueError("ed25519_selector needs selector too: receivers without ed25519 need RSA")
        return self


# --- the dkim keys end here ---


class AuthConfig(_Section):
    """SPF, DKIM and DMARC checks of inbound mail, in intake (issue 22)."""

    # Authentication-Results headers a message carries are ignored, except those whose authserv-id is
    # named here (the MTA in front of the gateway): their result is used, and recorded as taken from it.
    trusted_authserv_ids: tuple[str, ...] = ()
    # The name our own results carry (RFC 8601 authserv-id); empty: [smtp] hostname.
    authserv_id: str | None = None
    # Per message, all checks together (SPF, DKIM, DMARC): past it the rest is temperror.
    time_budget: float = Field(default=5.0, gt=0, le=60)
    # DKIM signatures verified per message (each costs a key lookup); the rest are not looked at.
    max_dkim_signatures: int = Field(default=5, ge=1, le=20)


# --- the auth keys end here ---


class DnsConfig(_Section):
    """The resolver the authentication checks ask (issue 22); empty means the system's."""

    # host or host:port (IPv6 as [addr]:port); the checks ask these and nothing else.
    nameservers: tuple[str, ...] = ()
    # One query's wait for an answer (UDP, then TCP for a truncated one).
    timeout: float = Field(default=2.0, gt=0, le=30)

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for item in value:
            host, port = split_nameserver(item)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address with an optional :port") from None
            if not 0 < port <= 65535:
                raise ValueError(f"{item!r}: port out of range")
        return value


def split_nameserver(item: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353` → (host, port)."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
    if item.count(":") == 1:
        host, _, port = item.partition(":")
        return host, int(port) if port.isdigit() else -1
    return item, 53


# --- the dns keys end here ---


class LogConfig(_Section):
    level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")


class Config(_Section):
    smtp: SmtpConfig = SmtpConfig()
    intake: IntakeConfig = IntakeConfig()
    store: StoreConfig = StoreConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    csam: CsamConfig = CsamConfig()
    web: WebConfig = WebConfig()
    status: StatusConfig = StatusConfig()
    reply: ReplyConfig = ReplyConfig()
    dkim: DkimConfig = DkimConfig()
    auth: AuthConfig = AuthConfig()
    dns: DnsConfig = DnsConfig()
    source: str | None = None  # the file it came from, for check-config

    def accepts_recipient(self, address: str) -> bool:
        """RCPT policy: the configured addresses and their plus-tags, or abuse@ anywhere when none are set."""
        local, _, domain = address.lower().partition("@")
        base = local.partition("+")[0]
        if not self.intake.addresses:
            return base == "abuse" and bool(domain)
        return f"{base}@{domain}" in self.intake.addresses


_SECTIONS: dict[str, type[_Section]] = {
    "smtp": SmtpConfig,
    "intake": IntakeConfig,
    "store": StoreConfig,
    "confirm": ConfirmConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "csam": CsamConfig,
    "web": WebConfig,
    "status": StatusConfig,
    "reply": ReplyConfig,
    "dkim": DkimConfig,
    "auth": AuthConfig,
    "dns": DnsConfig,
}


def _env_value(raw: str, annotation: Any) -> Any:
    """Environment values are strings; lists come as JSON or comma-separated."""
    if "tuple" in str(annotation):
        stripped = raw.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return raw


# ABUSE_GATEWAY_CONFIG names the file; ABUSE_GATEWAY_TEST_* belong to the test suite (tests/conftest.py).
_ENV_NOT_SETTINGS = (f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}TEST_")


def _apply_env(data: dict[str, dict[str, Any]], environ: dict[str, str]) -> None:
    known = {
        f"{ENV_PREFIX}{section.upper()}_{(info.alias or name).upper()}"
        for section, model in _SECTIONS.items()
        for name, info in model.model_fields.items()
    }
    for var in sorted(environ):
        if var.startswith(ENV_PREFIX) and var not in known and not var.startswith(_ENV_NOT_SETTINGS):
            # A typo here is otherwise silent: the setting the operator meant keeps its default.
            near = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"environment variable {var} names no setting{hint}")
    for section, model in _SECTIONS.items():
        for name, info in model.model_fields.items():
            key = info.alias or name
            var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if var in environ:
                try:
                    data.setdefault(section, {})[key] = _env_value(environ[var], info.annotation)
                except ValueError as exc:
                    raise ConfigError(f"{var}: {exc}") from exc


# What a list setting holds, for "`listen` must be a list of host:port strings".
_LIST_OF = {
    "listen": "host:port strings",
    "addresses": "addresses (local@domain)",
    "old_secret_files": "file paths",
    "hash_lists": "file paths",
    "terms": "wordings (strings)",
    "nameservers": "IP addresses (host or host:port)",
    "trusted_authserv_ids": "names (strings)",
}


def _explain(item: Any) -> str:
    """Pydantic's error in the words of a config file: what the value must be."""
    kind, ctx, key = item["type"], item.get("ctx") or {}, str(item["loc"][-1]) if item["loc"] else ""
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"must be a list of {_LIST_OF.get(key, 'values')}"
    simple = {
        "string_type": "must be a string (in quotes)",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "missing": "is required",
    }
    if kind in simple:
        return simple[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": "greater than", "greater_than_equal": "at least"}
        words |= {"less_than": "less than", "less_than_equal": "at most"}
        bound = next(iter(ctx.values()), "")
        return f"must be {words[kind]} {bound}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern', '')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in ("value_error", "assertion_error"):
        return str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return str(item["msg"])


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        section, key = (loc[0], loc[1]) if len(loc) > 1 else (loc[0] if loc else "", None)
        if item["type"] == "extra_forbidden" and key is not None:
            model = _SECTIONS.get(section)
            names = [f.alias or n for n, f in model.model_fields.items()] if model else []
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean `{near[0]}`?" if near else ""
            lines.append(f"unknown key `{key}` in [{section}]{hint}")
        elif key is None:
            lines.append(f"[{section}]: {_explain(item)}")
        else:
            where = f"`{key}`" + (f" (item {int(loc[2]) + 1})" if len(loc) > 2 and loc[2].isdigit() else "")
            lines.append(f"[{section}] {where}: {_explain(item)}")
    return "; ".join(lines)


def resolve_path(path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Path | None:
    environ = dict(os.environ) if environ is None else environ
    if path:
        return Path(path)
    if environ.get(f"{ENV_PREFIX}CONFIG"):
        return Path(environ[f"{ENV_PREFIX}CONFIG"])
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return None


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    config_path = resolve_path(path, environ)
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {config_path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from exc
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    _apply_env(data, environ)
    try:
        return Config.model_validate({**data, "source": str(config_path) if config_path else None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def effective_settings(config: Config) -> dict[str, Any]:
    """The settings as check-config prints them: secrets masked, never echoed."""
    dumped = config.model_dump(by_alias=True)
    if dumped["confirm"].get("smarthost_password"):
        dumped["confirm"]["smarthost_password"] = "********"
    dumped["store"]["url"] = _masked_url(dumped["store"]["url"])
    return dumped


def file_problems(config: Config) -> list[str]:
    """What would stop `serve` that only the file system can tell: check-config and serve both ask."""
    problems = []
    for key, path in (("tls_cert", config.smtp.tls_cert), ("tls_key", config.smtp.tls_key)):
        if not path:
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            problems.append(f"[smtp] `{key}`: cannot read {path}: {exc.strerror}")
    if config.smtp.tls_cert and config.smtp.tls_key and not problems:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                config.smtp.tls_cert, config.smtp.tls_key
            )
        except (ssl.SSLError, ValueError) as exc:
            problems.append(f"[smtp] `tls_cert`/`tls_key`: not a matching certificate and key ({exc})")
    return problems
def _masked_url(url: str) -> str:
    """The store URL with its password replaced (a PostgreSQL URL carries it: issue 15)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "********"  # unparseable: it may be all secret
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def warnings_for(config: Config) -> list[str]:
    notes = []
    if config.confirm.enabled and not config.confirm.smarthost:
        notes.append(
            "confirm.smarthost is not set: confirmations are written as .eml files under "
            f"{config.confirm.outbox_dir}; production needs a smarthost"
        )
    if not config.intake.addresses:
        notes.append("intake.addresses is empty: abuse@ is accepted at any domain")
    confirm = config.confirm
    if confirm.enabled and confirm.require_authenticated and confirm.from_.endswith("@localhost"):
        notes.append(
            "confirm.from is at localhost (the development default): confirmations are not held back for "
            "senders SPF and DKIM do not vouch for; a real from address is"
        )
    if config.dkim.domain:
        from parsers.mailauth import aligned

        if not aligned(config.dkim.domain, confirm.from_.partition("@")[2]):
            notes.append(
                f"dkim.domain {config.dkim.domain} is not aligned with the domain of confirm.from: "
                "receivers' DMARC checks of our mail fail"
            )
    if config.confirm.enabled and not config.dkim.selector:
        notes.append(
            "dkim.selector is not set: confirmations go out unsigned, and the large mailbox providers "
            "junk or reject them (`abuse-gateway dkim keygen --selector S` makes a key)"
        )
    return notes
