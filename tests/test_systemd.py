"""The systemd contract: the unit files are valid and locked down, and `serve` speaks sd_notify the way
`Type=notify` + `WatchdogSec=` + `NotifyAccess=main` expect, including the SIGTERM drain.

There is no running systemd here, so the test plays the service manager: it binds the notification
socket, sets NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID / LISTEN_FDS as systemd would, and checks each
datagram's sender pid with SO_PASSCRED, exactly as systemd does for `NotifyAccess=main`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import self_signed_pair, suite_env, upgrade_store

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
SERVICE = UNITS / "abuse-gateway.service"
SOCKET = UNITS / "abuse-gateway.socket"
SYSUSERS = UNITS / "abuse-gateway.sysusers"
STATUS_SERVICE = UNITS / "abuse-gateway-status.service"  # the status page (issue 21)
WEB_SERVICE = UNITS / "abuse-gateway-web.service"  # the desk (issue 20)
# Every service we ship, each verified with the units it comes with (the socket activates the gateway).
SERVICES = {"gateway": (SERVICE, SOCKET), "status-page": (STATUS_SERVICE,), "web": (WEB_SERVICE,)}
PRODUCTION_BINARY = "/opt/abuse-gateway/venv/bin/abuse-gateway"
MAX_EXPOSURE = 2.0
TIMEOUT = 60.0  # generous: two shared cores, other suites running

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

# Runs in the child before `serve`: puts the child's own pid into the variables systemd fills with the
# main pid (LISTEN_PID, WATCHDOG_PID), moves a passed socket to fd 3, optionally applies the unit's kernel
# sandbox (below), then execs, so the pid stays the same.
_AS_MAIN_PID = """
import ctypes, os, sys
for name in filter(None, os.environ.pop("_SET_TO_OWN_PID", "").split(",")):
    os.environ[name] = str(os.getpid())
fd = os.environ.pop("_MOVE_TO_FD3", "")
if fd:
    os.dup2(int(fd), 3)
    if int(fd) != 3:
        os.close(int(fd))
allowed = os.environ.pop("_SECCOMP_ALLOW", "")
families = os.environ.pop("_SECCOMP_FAMILIES", "")
if os.environ.pop("_MDWE", ""):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(f"PR_SET_MDWE: errno {ctypes.get_errno()}")
if allowed:
    class Arg(ctypes.Structure):
        _fields_ = [
            ("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Arg)]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    errno = lambda n: 0x00050000 | n  # SCMP_ACT_ERRNO
    ctx = seccomp.seccomp_init(errno(1))  # SystemCallErrorNumber=EPERM for everything not allowed
    for name in set(allowed.split(",")) - {"socket"}:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:
            assert seccomp.seccomp_rule_add_array(ctx, 0x7FFF0000, number, 0, None) == 0  # SCMP_ACT_ALLOW
    socket_nr = seccomp.seccomp_syscall_resolve_name(b"socket")
    permitted = {int(f) for f in families.split(",")}
    for family in range(64):  # RestrictAddressFamilies=: other families get EAFNOSUPPORT
        cmp = Arg(0, 4, family, 0)  # SCMP_CMP_EQ on arg 0
        action = 0x7FFF0000 if family in permitted else errno(97)
        assert seccomp.seccomp_rule_add_array(ctx, action, socket_nr, 1, ctypes.byref(cmp)) == 0
    if seccomp.seccomp_load(ctx) != 0:
        sys.exit("seccomp_load failed")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _systemd_analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def _installed_copy(
    directory: Path, unit_text: str | None = None, units: Sequence[Path] = (SERVICE, SOCKET)
) -> Path:
    """The units as installed, but with the service's ExecStart= pointing at this checkout's console script,
    so verify checks a command that exists instead of failing on /opt/abuse-gateway. The service is first
    in `units`, and `unit_text` stands in for its file."""
    binary = Path(sys.executable).with_name("abuse-gateway")
    if not binary.exists():
        pytest.skip("the abuse-gateway console script is not installed next to this interpreter")
    service, *others = units
    text = service.read_text() if unit_text is None else unit_text
    assert PRODUCTION_BINARY in text
    installed = directory / service.name
    installed.write_text(text.replace(PRODUCTION_BINARY, str(binary)))
    for unit in others:
        shutil.copy(unit, directory / unit.name)
    return installed


# ---- the unit files --------------------------------------------------------------------------------------


@needs_systemd_analyze
@pytest.mark.parametrize("units", SERVICES.values(), ids=list(SERVICES))
def test_unit_files_pass_systemd_analyze_verify_without_a_single_warning(
    tmp_path: Path, units: tuple[Path, ...]
) -> None:
    _installed_copy(tmp_path, units=units)
    names = [f"./{unit.name}" for unit in units]
    result = _systemd_analyze("verify", "--man=no", "--generators=no", *names, cwd=tmp_path)
    # verify exits 0 on unknown keys and unparsable values (it only logs "ignoring"): silence is the bar.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize(
    "mistake", ["UMask=0077\nProtectSystm=strict", "UMask=zz"], ids=["misspelt key", "bad value"]
)
def test_verify_check_notices_a_mistake_systemd_would_silently_ignore(tmp_path: Path, mistake: str) -> None:
    """Guards the test above: a silently ignored sandboxing line must make it fail, not pass."""
    broken = SERVICE.read_text().replace("UMask=0077", mistake)
    service = _installed_copy(tmp_path, broken)
    result = _systemd_analyze("verify", "--man=no", "--generators=no", f"./{service.name}", cwd=tmp_path)
    assert result.stdout.strip() or result.stderr.strip()


@needs_systemd_analyze
@pytest.mark.parametrize("service", [units[0] for units in SERVICES.values()], ids=list(SERVICES))
def test_service_exposure_is_at_most_two(service: Path) -> None:
    result = _systemd_analyze("security", "--offline=true", "--no-pager", str(service))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def _unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_port_25_is_the_only_privilege_and_usable_without_a_user_namespace() -> None:
    """CAP_NET_BIND_SERVICE only; PrivateUsers=yes would void it in the host network namespace."""
    settings = _unit_settings(SERVICE)
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings.get("PrivateUsers", ["no"]) == ["no"]
    assert settings["User"] == ["abuse-gateway"]
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]


def test_stop_timeout_outlasts_the_drain_inside_serve() -> None:
    """serve waits up to 30 s for sessions, then up to 30 s for the intake worker; SIGKILL must come later."""
    value = _unit_settings(SERVICE)["TimeoutStopSec"][0]
    seconds = float(value.removesuffix("s")) if not value.endswith("min") else 60 * float(value[:-3])
    assert seconds > 60


def test_sysusers_creates_the_service_user_without_a_login_shell(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    entry = next(
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("abuse-gateway:")
    )
    assert int(entry[2]) < 1000  # a system uid
    assert entry[5] == "/var/lib/abuse-gateway"
    assert entry[6].endswith("nologin")


# ---- serve under a stand-in service manager --------------------------------------------------------------


@dataclass
class Notification:
    state: str
    pid: int | None
    at: float


@dataclass
class NotifySocket:
    """The service manager's end of sd_notify: an AF_UNIX datagram socket that learns each sender's pid."""

    path: str
    sock: socket.socket
    received: list[Notification] = field(default_factory=list)

    def wait_for(self, state: str, timeout: float = TIMEOUT) -> Notification:
        deadline = time.monotonic() + timeout
        for seen in self.received:
            if state in seen.state.split("\n"):
                return seen
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                break
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            note = Notification(data.decode(), pid, time.monotonic())
            self.received.append(note)
            if state in note.state.split("\n"):
                return note
        raise AssertionError(f"no {state} within {timeout}s; got {[n.state for n in self.received]}")


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # Short path of our own: AF_UNIX paths are limited to 108 bytes and pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="agw-notify-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    try:
        yield NotifySocket(path, sock)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    config: Path
    port: int
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
            cwd=self.config.parent,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
        )

    def serve(
        self,
        notify: NotifySocket,
        extra_env: dict[str, str] | None = None,
        own_pid_vars: Sequence[str] = (),
        pass_socket: socket.socket | None = None,
    ) -> subprocess.Popen[bytes]:
        """`serve` started the way systemd starts it: NOTIFY_SOCKET set, and variables that must name the
        main pid filled in by the child itself before it execs (see _AS_MAIN_PID)."""
        env = {
            **self.env,
            "NOTIFY_SOCKET": notify.path,
            "_SET_TO_OWN_PID": ",".join(own_pid_vars),
            **(extra_env or {}),
        }
        if pass_socket is not None:
            env["_MOVE_TO_FD3"] = str(pass_socket.fileno())
        return subprocess.Popen(
            [sys.executable, "-c", _AS_MAIN_PID, "-m", "gateway", "serve", "--config", str(self.config)],
            cwd=self.config.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(pass_socket.fileno(),) if pass_socket is not None else (),
        )


def _clean_env() -> dict[str, str]:
    """No configuration or systemd variables leak in from the environment running the tests."""
    prefixes = ("ABUSE_GATEWAY_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | suite_env()


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nhostname = "mx.test.example"\n'
        '[intake]\naddresses = ["abuse@example.org"]\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/cases.db"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nfrom = "abuse@example.org"\noutbox_dir = "{tmp_path}/outbox"\n'
        f'secret_file = "{tmp_path}/reply-token.key"\n'
    )
    return Deployment(config, port, _clean_env())


@pytest.fixture
def upgraded(deployment: Deployment) -> Deployment:
    """The store at head, from the session's template (`db upgrade` has tests of its own)."""
    upgrade_store(f"sqlite:///{deployment.config.parent}/cases.db")
    return deployment


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    return stderr


def _refuses_connections_soon(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.recv(512)


def test_ready_comes_once_the_port_answers_then_watchdog_then_stopping_and_exit_0(
    upgraded: Deployment, notify_socket: NotifySocket
) -> None:
    proc = upgraded.serve(
        notify_socket, extra_env={"WATCHDOG_USEC": "2000000"}, own_pid_vars=["WATCHDOG_PID"]
    )
    try:
        ready = notify_socket.wait_for("READY=1")
        # The moment READY=1 is read, the port must already greet: systemd starts dependants now.
        assert _banner(upgraded.port).startswith(b"220 ")
        assert ready.pid == proc.pid  # NotifyAccess=main: systemd drops datagrams from any other pid
        watchdog = notify_socket.wait_for("WATCHDOG=1", timeout=10)  # WATCHDOG_USEC/2 = 1 s, then a check
        assert watchdog.pid == proc.pid and watchdog.at > ready.at
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        stderr = _stop(proc)
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


def test_no_watchdog_pings_when_watchdog_pid_names_another_process(
    upgraded: Deployment, notify_socket: NotifySocket
) -> None:
    """sd_watchdog_enabled(3): keep-alives are only for the pid systemd named, never for a child."""
    proc = upgraded.serve(notify_socket, extra_env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    try:
        notify_socket.wait_for("READY=1")
        with pytest.raises(AssertionError, match="no WATCHDOG=1"):
            notify_socket.wait_for("WATCHDOG=1", timeout=2)
    finally:
        _stop(proc)


def test_serve_on_a_store_that_needs_upgrade_exits_2_and_never_says_ready(
    deployment: Deployment, notify_socket: NotifySocket
) -> None:
    proc = deployment.serve(notify_socket)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2
    assert b"db upgrade" in stderr
    with pytest.raises(AssertionError, match="no READY=1"):
        notify_socket.wait_for("READY=1", timeout=0.5)


def test_serve_takes_mail_on_the_socket_systemd_passed_instead_of_binding_its_own(
    upgraded: Deployment, notify_socket: NotifySocket
) -> None:
    """Socket activation (abuse-gateway.socket): LISTEN_FDS=1 and fd 3, as sd_listen_fds(3) describes."""
    listener = socket.create_server(("127.0.0.1", 0))
    passed_port = listener.getsockname()[1]
    proc = upgraded.serve(
        notify_socket,
        extra_env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"},
        own_pid_vars=["LISTEN_PID"],
        pass_socket=listener,
    )
    listener.close()  # the child holds its own copy, as with systemd
    try:
        notify_socket.wait_for("READY=1")
        assert _banner(passed_port).startswith(b"220 ")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", upgraded.port), timeout=2).close()
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr.decode(errors="replace")


class SmtpLine:
    """A raw SMTP client, so the test can stop halfway through DATA (smtplib sends DATA in one go)."""

    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.conn.makefile("rb")

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            assert line, "connection closed"
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.conn.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.conn.close()


def test_sigterm_during_a_slow_data_lets_that_message_finish_and_be_stored(
    upgraded: Deployment, notify_socket: NotifySocket
) -> None:
    first_half = (
        b"From: Reporter <reporter@example.net>\r\nTo: abuse@example.org\r\n"
        b"Subject: Slow report\r\nMessage-ID: <slow-1@example.net>\r\n\r\n"
        b"The page https://slow-phish.example/login asks for passwords.\r\n"
    )
    second_half = b"Second half, sent after SIGTERM: marker-7f3a.\r\n"
    proc = upgraded.serve(notify_socket)
    client: SmtpLine | None = None
    try:
        notify_socket.wait_for("READY=1")
        client = SmtpLine(upgraded.port)
        assert client.reply().startswith("220")
        assert client.command("EHLO client.test").startswith("250")
        assert client.command("MAIL FROM:<reporter@example.net>").startswith("250")
        assert client.command("RCPT TO:<abuse@example.org>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.conn.sendall(first_half)

        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1")
        # Draining: the listener closes (just after STOPPING=1 is sent), the session in DATA goes on.
        assert _refuses_connections_soon(upgraded.port)
        assert proc.poll() is None

        client.conn.sendall(second_half + b".\r\n")
        assert client.reply().startswith("250 2.0.0")
        assert client.command("QUIT").startswith("221")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if client is not None:
            client.close()
        stderr = _stop(proc)
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")

    listed = upgraded.cli("cases", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    cases = json.loads(listed.stdout)
    assert len(cases) == 1 and cases[0]["messages"] == 1
    raw = upgraded.cli("cases", "raw", cases[0]["case_id"], "1")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == first_half + second_half  # whole, unchanged: nothing cut at the signal


# ---- serve inside the unit's kernel sandbox --------------------------------------------------------------


def _syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: every @group with its members (names and nested @groups)."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in _systemd_analyze("syscall-filter", "--no-pager").stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def _expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for item in items:
        names |= _expand(groups[item], groups) if item.startswith("@") else {item}
    return names


def _unit_sandbox() -> dict[str, str]:
    """The unit's SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute=, read from the
    unit itself, as the variables _AS_MAIN_PID turns into a seccomp filter and PR_SET_MDWE."""
    settings = _unit_settings(SERVICE)
    groups = _syscall_groups()
    # In order, as systemd applies them after a first allow list: `~` lines take calls out, others add.
    allow: set[str] = set()
    for value in settings["SystemCallFilter"]:
        if value.startswith("~"):
            allow -= _expand(value[1:].split(), groups)
        else:
            allow |= _expand(value.split(), groups)
    families = [
        str(getattr(socket, n)) for value in settings["RestrictAddressFamilies"] for n in value.split()
    ]
    assert settings["MemoryDenyWriteExecute"] == ["yes"]
    assert settings["SystemCallErrorNumber"] == ["EPERM"]
    return {
        "_SECCOMP_ALLOW": ",".join(sorted(allow)),
        "_SECCOMP_FAMILIES": ",".join(families),
        "_MDWE": "1",
    }


def _kernel_sandbox_available() -> str | None:
    """Why the sandbox test cannot run here, or None."""
    if SYSTEMD_ANALYZE is None:
        return "systemd-analyze is not installed"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp is not installed"
    if ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE: Linux 6.3 and later
        return "the kernel has no PR_SET_MDWE (Linux < 6.3)"
    return None


def test_serve_takes_mail_over_starttls_inside_the_units_syscall_filter_and_wx_ban(
    upgraded: Deployment, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """MemoryDenyWriteExecute= and SystemCallFilter= fail only at run time, and only on the path that
    makes the forbidden call: so the whole path runs under them here (kernel MDWE standing in for
    systemd's seccomp rule), from READY=1 through STARTTLS, storage, intake and the confirmation file."""
    reason = _kernel_sandbox_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = self_signed_pair(tmp_path, "mx.test")
    tls = f'[smtp]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    upgraded.config.write_text(upgraded.config.read_text().replace("[smtp]\n", tls, 1))
    proc = upgraded.serve(notify_socket, extra_env=_unit_sandbox())
    try:
        notify_socket.wait_for("READY=1")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", upgraded.port, timeout=TIMEOUT) as client:
            client.starttls(context=context)
            client.ehlo("client.test")
            client.sendmail(
                "reporter@example.net",
                ["abuse@example.org"],
                b"From: reporter@example.net\r\nTo: abuse@example.org\r\nSubject: Phish\r\n\r\n"
                b"See https://sandboxed-phish.example/login\r\n",
            )
        outbox = tmp_path / "outbox"
        deadline = time.monotonic() + TIMEOUT
        while not any(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(outbox.glob("*.eml")), "no confirmation written"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        stderr = _stop(proc)
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text and "Operation not permitted" not in text, text
    listed = upgraded.cli("cases", "list", "--json", "--indicator", "sandboxed-phish.example")
    assert len(json.loads(listed.stdout)) == 1


# ---- the status page's unit (issue 21) -------------------------------------------------------------------


def test_status_page_unit_has_no_privilege_and_shares_the_sandbox_of_the_gateway() -> None:
    """It faces the Internet with no capability at all, and keeps every hardening line the gateway has."""
    status, gateway = _unit_settings(STATUS_SERVICE), _unit_settings(SERVICE)
    assert status["CapabilityBoundingSet"] == [""] and status["AmbientCapabilities"] == [""]
    assert status["User"] == ["abuse-gateway"] and status["NoNewPrivileges"] == ["yes"]
    assert "status-page" in status["ExecStart"][0]
    for key in (
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
        "SystemCallArchitectures",
        "ProtectKernelTunables",
        "UMask",
    ):
        assert status[key] == gateway[key], key


# ---- the desk's unit (issue 20) --------------------------------------------------------------------------


def test_web_unit_runs_the_desk_with_no_privilege_as_the_service_user() -> None:
    """The desk binds an unprivileged port: no capability at all, unlike the SMTP unit's port 25; the
    same user, config and state directory, so it reads the store `serve` writes."""
    web, smtp = _unit_settings(WEB_SERVICE), _unit_settings(SERVICE)
    assert web["ExecStart"][0].split()[1:3] == ["web", "--config"]
    assert web["CapabilityBoundingSet"] == [""] and web["AmbientCapabilities"] == [""]
    for key in ("User", "Group", "StateDirectory", "ConfigurationDirectory", "WorkingDirectory", "UMask"):
        assert web[key] == smtp[key], key
    for key in ("NoNewPrivileges", "ProtectSystem", "MemoryDenyWriteExecute", "RestrictAddressFamilies"):
        assert web[key] == smtp[key], key
