"""The registries' logins: who may talk to them, and the htpasswd they check it with.

    DIR/logins.json  (0600)  {"server": PASSWORD, "hosts": PASSWORD}   made once
    DIR/htpasswd     (0600)  server:$2b$..., hosts:$2b$...   bcrypt, what Distribution reads

Two logins:
- ``dockyard`` (SERVER): the API server's, to push and delete; the one admins get from
  ``dockyard registry login`` for ``docker login``.
- ``dockyard-hosts`` (HOSTS): the agents', to pull; the server hands it to each agent
  with its desired state, and a pull-through cache uses it towards its primary.

Distribution's htpasswd checks who you are, not what you may do: any login it
accepts may push and delete. So members get no login (``registry login`` is for
admins), and the hosts' login is a secret of the hosts. Distribution reads bcrypt
entries only. Only this module imports ``bcrypt``.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

SERVER, HOSTS = "dockyard", "dockyard-hosts"


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return f"Login({self.username!r}, password=***)"


@dataclass(frozen=True)
class Logins:
    server: Login  # pushes, deletes (the API server; admins' `docker login`)
    hosts: Login  # pulls (every agent; a cache towards its primary)

    def all(self) -> list[Login]:
        return [self.server, self.hosts]


def ensure(path: Path) -> Logins:
    """The logins in ``path``, made with random passwords (0600) when it is not there."""
    if not path.exists():
        body = {"server": secrets.token_urlsafe(24), "hosts": secrets.token_urlsafe(24)}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(path, json.dumps(body) + "\n")
    return read(path)


def read(path: Path) -> Logins:
    """The logins ``ensure`` wrote; ValueError says what is wrong with the file."""
    try:
        body = json.loads(path.read_text())
        return Logins(Login(SERVER, body["server"]), Login(HOSTS, body["hosts"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a registry logins file ({exc})") from exc


def htpasswd(logins: Logins) -> str:
    """htpasswd lines with bcrypt hashes (a new salt each time).

    At bcrypt's lowest cost: Distribution checks the hash on every request (a pull or
    push is dozens), and at the default cost 12 each check took ~0.25 s of a core
    (0.7 s on a loaded host), most of a migration's registry time. The passwords are
    192 random bits, which no cost factor makes any harder or easier to guess."""
    return "".join(
        f"{login.username}:{bcrypt.hashpw(login.password.encode(), bcrypt.gensalt(4)).decode()}\n"
        for login in logins.all()
    )


def check(line_file: str, login: Login) -> bool:
    """Whether an htpasswd text accepts ``login`` (for tests and diagnostics)."""
    for line in line_file.splitlines():
        user, _, hashed = line.partition(":")
        if user == login.username:
            return bcrypt.checkpw(login.password.encode(), hashed.encode())
    return False


def write_secret(path: Path, text: str) -> None:
    """Written 0600 from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
