"""A small FTP server for the live tests (the standard library has a client, not a server).

Run as ``python ftp_server.py IP SIZE``: listens on IP:21, serves one session at a time:
USER, PASS, TYPE, NOOP, PORT, EPRT (active: it connects from port 20), PASV, EPSV (passive:
it listens on a free port), RETR (any name: SIZE bytes of a fixed pattern), QUIT. Every
socket has a timeout, so a broken path ends the session instead of hanging.
"""

from __future__ import annotations

import socket
import sys

PATTERN = bytes(range(256))


def payload(size: int) -> bytes:
    return (PATTERN * (size // 256 + 1))[:size]


def _data_socket(mode, ip):
    kind, where = mode
    if kind == "active":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(10)
        s.bind((ip, 20))
        s.connect(where)
        return s
    conn, _ = where.accept()
    conn.settimeout(10)
    where.close()
    return conn


def session(ctrl: socket.socket, ip: str, size: int) -> None:
    f = ctrl.makefile("rwb", buffering=0)

    def reply(text: str) -> None:
        f.write(text.encode() + b"\r\n")

    reply("220 ctaccel test ftp")
    mode = None
    for raw in f:
        words = raw.decode(errors="replace").strip().split(" ", 1)
        cmd, arg = words[0].upper(), (words[1] if len(words) > 1 else "")
        if cmd in ("USER", "PASS", "TYPE", "NOOP"):
            reply({"USER": "331 ok", "PASS": "230 in"}.get(cmd, "200 ok"))
        elif cmd == "PORT":
            n = [int(x) for x in arg.split(",")]
            mode = ("active", (".".join(map(str, n[:4])), n[4] * 256 + n[5]))
            reply("200 PORT ok")
        elif cmd == "EPRT":
            _af, host, port = arg.strip("|").split("|")
            mode = ("active", (host, int(port)))
            reply("200 EPRT ok")
        elif cmd in ("PASV", "EPSV"):
            lst = socket.socket()
            lst.settimeout(10)
            lst.bind((ip, 0))
            lst.listen(1)
            port = lst.getsockname()[1]
            mode = ("passive", lst)
            if cmd == "PASV":
                nums = ip.replace(".", ",") + f",{port >> 8},{port & 255}"
                reply(f"227 Entering Passive Mode ({nums}).")
            else:
                reply(f"229 Entering Extended Passive Mode (|||{port}|)")
        elif cmd == "RETR" and mode is not None:
            reply("150 sending")
            try:
                data = _data_socket(mode, ip)
                data.sendall(payload(size))
                data.close()
                reply("226 done")
            except OSError as exc:
                reply(f"425 no data connection: {exc}")
            mode = None
        elif cmd == "QUIT":
            reply("221 bye")
            return
        else:
            reply("502 not here")


def main() -> None:
    ip, size = sys.argv[1], int(sys.argv[2])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, 21))
    srv.listen(4)
    srv.settimeout(120)
    while True:
        ctrl, _ = srv.accept()
        ctrl.settimeout(15)
        try:
            session(ctrl, ip, size)
        except OSError:
            pass
        finally:
            ctrl.close()


if __name__ == "__main__":
    main()
