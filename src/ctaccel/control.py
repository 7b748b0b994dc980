"""The control socket of a running datapath, like ``ovs-appctl``'s: ``ctaccel ctl COMMAND``.

What: :class:`ControlServer` listens on a Unix socket and answers requests between batches
(live.LiveDatapath calls :meth:`ControlServer.serve` when poll says a request is waiting);
:func:`request` is the client; :func:`default_path` the socket's default place
(``/run/ctaccel/ctaccel.ctl`` as root, else ``$XDG_RUNTIME_DIR/ctaccel.ctl``). Commands:
dump-conntrack [-m] [-s] [--expectations] [--zone Z], dump-flows, add-flows FILE, replace-flows FILE,
del-flows, flush-conntrack [--zone Z], fdb-show, fdb-flush, import-kernel [--zone-map KZ=Z],
export-kernel [--zone-map KZ=Z] (the kernel's conntrack table of the datapath's namespace:
kernel_sync.py; JSON counts), stats, stop. Every reply is what the offline command prints
(dpctl/dump-conntrack lines, dump-flows), or JSON for stats.

Design: one request per connection, one JSON line each way: ``{"command", "args", "files"}``
(the client sends a rule file's text with its name, so errors say ``file:line``) and
``{"ok", "output"}``. A request that fails is an error reply; nothing a client sends can stop
the datapath but ``stop``. A rule change parses the whole file first and replaces the rule
set in one step (engine.replace_flows drops every cache built from the old rules), so no
packet sees half of it; connections stay in conntrack and follow the new rules, as in OVS.

Invariants: the server never blocks the datapath for longer than one client's request (a
client that does not send its line within CLIENT_TIMEOUT_S is dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket

from ctaccel.errors import CtaccelError, InputError

CLIENT_TIMEOUT_S = 2.0
MAX_REQUEST = 64 << 20
COMMANDS = ("dump-conntrack", "dump-flows", "add-flows", "replace-flows", "del-flows",
            "flush-conntrack", "fdb-show", "fdb-flush", "import-kernel", "export-kernel",
            "stats", "stop")  # fmt: skip


def default_path() -> str:
    if os.geteuid() == 0:
        return "/run/ctaccel/ctaccel.ctl"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/ctaccel-{os.getuid()}"
    return os.path.join(base, "ctaccel.ctl")


class ControlServer:
    """The listening socket; raises InputError when the path is taken by a live datapath or
    cannot be made."""

    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        if os.path.exists(self.path):
            if _answers(self.path):
                raise InputError(f"{self.path}: a datapath already listens there (use --ctl)")
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # left by a datapath that died
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.path)
            self.sock.listen(16)
            self.sock.setblocking(False)
        except OSError as e:
            raise InputError(f"{self.path}: cannot listen for control requests: "
                             f"{e.strerror}") from None  # fmt: skip

    def register(self, poller) -> None:
        poller.register(self.sock.fileno(), select.POLLIN)

    def serve(self, events, datapath) -> None:
        """Answer every request waiting (``events`` from poll: nothing to do unless the
        listening socket is among them)."""
        if not any(fd == self.sock.fileno() for fd, _ev in events):
            return
        while True:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                conn.settimeout(CLIENT_TIMEOUT_S)
                try:
                    req = _read_line(conn)
                    ok, output = handle(datapath, json.loads(req))
                except (OSError, ValueError) as e:
                    ok, output = False, f"bad request: {e}"
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"ok": ok, "output": output}).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def handle(dp, req) -> tuple[bool, str]:
    """One request against a running datapath: (ok, the reply's text)."""
    if not isinstance(req, dict) or req.get("command") not in COMMANDS:
        cmd = req.get("command") if isinstance(req, dict) else req
        return False, f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}"
    cmd, args = req["command"], [str(a) for a in req.get("args") or []]
    try:
        return True, _COMMANDS[cmd](dp, args, req.get("files") or {})
    except CtaccelError as e:
        return False, str(e)
    except (ValueError, TypeError, KeyError, OSError) as e:
        return False, f"{cmd}: {e}"


def _zone(args) -> int | None:
    if not args:
        return None
    if len(args) == 2 and args[0] == "--zone":
        return int(args[1])
    if len(args) == 1 and args[0].startswith("zone="):
        return int(args[0][5:])
    raise ValueError(f"unexpected arguments {' '.join(args)!r} (expected --zone Z)")


def _dump_conntrack(dp, args, _files) -> str:
    flags = {a for a in args if a in ("-m", "--more", "-s", "--statistics", "--expectations")}
    verbose = bool(flags & {"-m", "--more"})
    stats = bool(flags & {"-s", "--statistics"})
    zone = _zone([a for a in args if a not in flags])
    if "--expectations" in flags:
        lines = dp.engine.conntrack.dump_expectations(zone)
    else:
        lines = dp.engine.conntrack.dump(dp.clock_ms(), zone, verbose, stats)
    return "".join(line + "\n" for line in lines)


def _zone_map(dp, args) -> dict[int, int]:
    """``--zone-map KZ=Z`` arguments (repeatable), else the map ``run`` was started with."""
    from ctaccel.conntrack.kernel_map import parse_zone_map

    if not args:
        return dict(getattr(dp, "kernel_zone_map", {}) or {})
    specs = []
    it = iter(args)
    for a in it:
        if a != "--zone-map":
            raise ValueError(f"unexpected argument {a!r} (expected --zone-map KZ=Z)")
        specs.append(next(it, ""))
    return parse_zone_map(specs)


def _import_kernel(dp, args, _files) -> str:
    from ctaccel.kernel_sync import import_from_kernel

    result = import_from_kernel(dp.engine.conntrack, dp.clock_ms(), _zone_map(dp, args))
    return json.dumps(result, indent=2) + "\n"


def _export_kernel(dp, args, _files) -> str:
    from ctaccel.kernel_sync import export_to_kernel

    result = export_to_kernel(dp.engine.conntrack, dp.clock_ms(), _zone_map(dp, args))
    return json.dumps(result, indent=2) + "\n"


def _dump_flows(dp, _args, _files) -> str:
    from ctaccel.ofproto.dumpflows import format_dump_flows

    return format_dump_flows(dp.engine.tables.all_rules(), dp.engine.rule_counters())


def _rules_from(files) -> list:
    from ctaccel.ofproto.rules import parse_flows

    if len(files) != 1:
        raise ValueError("expected one rule file")
    ((name, text),) = files.items()
    return parse_flows(text, name)


def _add_flows(dp, _args, files) -> str:
    from ctaccel.ofproto.rules import merge_rules

    added = _rules_from(files)
    dp.engine.replace_flows(merge_rules(dp.engine.tables.all_rules(), added))
    return ""


def _replace_flows(dp, _args, files) -> str:
    dp.engine.replace_flows(_rules_from(files))
    return ""


def _del_flows(dp, _args, _files) -> str:
    dp.engine.replace_flows([])
    return ""


def _flush_conntrack(dp, args, _files) -> str:
    dp.engine.conntrack.flush(_zone(args))
    if hasattr(dp.engine, "flush_fast_path"):
        dp.engine.flush_fast_path()
    return ""


def _fdb_show(dp, _args, _files) -> str:
    return dp.engine.bridge.dump_macs() + "\n"


def _fdb_flush(dp, _args, _files) -> str:
    dp.engine.bridge.flush_macs()
    return "table successfully flushed\n"


def _stats(dp, _args, _files) -> str:
    return json.dumps(dp.stats(), indent=2) + "\n"


def _stop(dp, _args, _files) -> str:
    dp.stopping = True
    return ""


_COMMANDS = {"dump-conntrack": _dump_conntrack, "dump-flows": _dump_flows,
             "add-flows": _add_flows, "replace-flows": _replace_flows, "del-flows": _del_flows,
             "flush-conntrack": _flush_conntrack, "fdb-show": _fdb_show,
             "fdb-flush": _fdb_flush, "import-kernel": _import_kernel,
             "export-kernel": _export_kernel, "stats": _stats, "stop": _stop}  # fmt: skip


def _read_line(conn) -> str:
    chunks, size = [], 0
    while True:
        b = conn.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
        size += len(b)
        if b.endswith(b"\n") or size > MAX_REQUEST:
            break
    return b"".join(chunks).decode()


def _answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: str | None, command: str, args=(), rule_file: str | None = None,
            timeout: float = 30.0) -> tuple[bool, str]:  # fmt: skip
    """Send one request to the datapath listening at ``path``; (ok, output). Raises
    InputError when nothing listens there or the rule file cannot be read."""
    path = path or default_path()
    files = {}
    if rule_file is not None:
        try:
            with open(rule_file, encoding="utf-8") as f:
                files[rule_file] = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{rule_file}: cannot read rule file: {e}") from None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as e:
            raise InputError(f"{path}: no datapath answers there ({e.strerror}); is "
                             "`ctaccel run` running, with this --ctl?") from None  # fmt: skip
        msg = {"command": command, "args": list(args), "files": files}
        s.sendall(json.dumps(msg).encode() + b"\n")
        reply = json.loads(_read_line(s) or "{}")
    finally:
        s.close()
    return bool(reply.get("ok")), str(reply.get("output", "no reply"))
