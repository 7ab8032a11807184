"""Where the queue's authkey comes from: environment, a file, or a fresh random key.

A master given no key keeps one in its output folder (``OUT/authkey``) and
uses it again on every start, so workers started with the command it printed
still fit after a restart.

The manager protocol unpickles what it receives, so the authkey is the only
gate between the network and code execution on the master: it is never
hard-coded, never put on a command line (where the process list shows it),
and never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from crawler.errors import (
    AuthkeyError,
    BindError,
    CrawlerError,
    OutputFolderInUse,
    StorageError,
)
from crawler.model.folders import make_folder
from crawler.model.shellword import shell_word

log = logging.getLogger(__name__)

ENV_VAR = "CRAWLER_AUTHKEY"
KEY_FILE_NAME = "authkey"  # in the master's output folder
MIN_REMOTE_BYTES = 16
GENERATE_HINT = ("generate one with: python -c 'import secrets; print(secrets.token_hex(16))' "
                 "> authkey && chmod 600 authkey")


class Authkey(NamedTuple):
    key: bytes = b""
    source: str = ""  # "environment", a file path, or "generated"
    fresh: bool = False  # made by this start of the master (and written to ``source``)
    # The folders made for a fresh key's file, deepest first (the output folder, and
    # those of its parents that were not there).
    folders_made: tuple[Path, ...] = ()

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Authkey(source={self.source!r})"


# What a worker (or crawler status) with an empty key file should do: it needs the
# master's key, not a new one.
MASTERS_KEY_HINT = ("put the master's key in it: the file the master was started with, or "
                    "the authkey file in the master's output folder")

# What a master should do with the key file of its own output folder found empty: it
# made that file, and no worker can have used an empty key.
OWN_KEY_HINT = ("the master made it, and a crash as it did can leave it so: remove it, and "
                "the master makes a new one")


def load_authkey(key_file: Path | None, *, generate: bool,
                 empty_hint: str = GENERATE_HINT) -> Authkey:
    """The key from ``key_file``, else ``$CRAWLER_AUTHKEY``, else a new one if ``generate``.
    ``empty_hint``: what to do about an empty key file."""
    if key_file is not None:
        try:
            text = key_file.read_bytes().strip()
            mode = key_file.stat().st_mode
        except IsADirectoryError as exc:  # the master's output folder, given for its key
            if key_file.name == KEY_FILE_NAME:  # OUT/authkey, made a folder: no key in it
                raise AuthkeyError(f"cannot read the authkey file {key_file}: it is a "
                                   "folder, where the key's file belongs") from exc
            raise AuthkeyError(f"cannot read the authkey file {key_file}: it is a folder; the "
                               f"master's key is the file {KEY_FILE_NAME} in its output "
                               f"folder: --authkey-file {shell_word(key_file / KEY_FILE_NAME)}"
                               ) from exc
        except OSError as exc:
            raise AuthkeyError(f"cannot read the authkey file {key_file}: "
                               f"{exc.strerror or exc}") from exc
        if not text:
            raise AuthkeyError(f"the authkey file {key_file} is empty; {empty_hint}")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the authkey file %s can be read by other users; "
                        "run: chmod 600 %s", key_file, shell_word(key_file))
        return Authkey(text, str(key_file))
    # Its bytes, as a key file's are read: a value that is not UTF-8 (Python holds its
    # bytes as surrogates) made str.encode() raise, a traceback.
    from_env = os.fsencode(os.environ.get(ENV_VAR, "")).strip()
    if from_env:
        _warn_of_a_path(from_env)
        return Authkey(from_env, "environment")
    if generate:
        return Authkey(secrets.token_hex(MIN_REMOTE_BYTES).encode(), "generated")
    # Where the key is, as a refused key is told: a worker started before reading the
    # master's "workers on this host" line knows no OUT/authkey.
    # Set and blank, as CRAWLER_AUTHKEY=$(cat FILE) leaves it when FILE is missing: "set
    # CRAWLER_AUTHKEY" alone read as if the variable had not reached the process.
    blank = f" ({ENV_VAR} is set, but empty)" if ENV_VAR in os.environ else ""
    raise AuthkeyError(f"no authkey{blank}: set {ENV_VAR} or pass --authkey-file with the "
                       "master's key (in Python: authkey=); a master started without one keeps "
                       f"its own in OUT/{KEY_FILE_NAME}")


def _warn_of_a_path(from_env: bytes) -> None:
    """Warn when ``$CRAWLER_AUTHKEY``, which holds the key itself, names a file (as
    ``--authkey-file`` does): its path, taken as the key, fits no master that made its key.
    Still used as given: a master and workers started with the same value fit."""
    name = os.fsdecode(from_env)
    try:
        a_file = Path(name).is_file()  # (False for a NUL byte in it)
    except OSError:  # no path at all: a name too long, say
        a_file = False
    if a_file:
        log.warning("%s holds the key itself, and its value is the name of the file %s: it "
                    "is taken as the key; for the key in that file, give --authkey-file %s "
                    "instead", ENV_VAR, name, name)


def master_authkey(key_file: Path | None, out_dir: Path, *, keep: bool,
                   workers_elsewhere: bool = True) -> Authkey:
    """The master's key: ``key_file``, else ``$CRAWLER_AUTHKEY``, else ``out_dir/authkey``.

    That file is made with a new key (mode 0600) when missing, and used as it
    is when present. With ``keep`` False (a dry run, which leaves the output
    folder alone) a missing one is not made: the key lives in memory.
    ``workers_elsewhere`` False: no worker but the master's own joins (the demo), so a
    variable set but empty is no one's mistake to say.
    """
    if key_file is not None or os.environ.get(ENV_VAR, "").strip():
        return load_authkey(key_file, generate=False)
    if ENV_VAR in os.environ and keep and workers_elsewhere:
        # CRAWLER_AUTHKEY=$(cat FILE), FILE missing: a master that made a key of its own
        # then started, and every worker started with the same variable was refused.
        raise AuthkeyError(f"{ENV_VAR} is set, but empty: set it to the key, or unset it "
                           f"for the master to keep its own in OUT/{KEY_FILE_NAME}, or pass "
                           "--authkey-file (in Python: authkey=)")
    path = out_dir / KEY_FILE_NAME
    if path.exists() or not keep:
        return (load_authkey(path, generate=False, empty_hint=OWN_KEY_HINT) if path.exists()
                else load_authkey(None, generate=True))
    key = secrets.token_hex(MIN_REMOTE_BYTES).encode()
    folders_made = _missing_folders(out_dir)
    make_folder(out_dir, "the output folder")
    # Written whole under another name, then linked into place: a master started at
    # the same moment on this folder read the file between another's create and
    # write, found it empty, and advised writing a new key over the one in use.
    draft = path.with_name(f".{KEY_FILE_NAME}.{secrets.token_hex(4)}")
    try:
        _write_new(draft, key)  # (removes what it made, if it fails)
        try:
            os.link(draft, path)  # fails if the key is there: never replaced
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system (FAT): in place
            _write_new(path, key)
        finally:
            draft.unlink(missing_ok=True)
    except FileExistsError:  # another master on this folder made it just now
        return load_authkey(path, generate=False)
    except OSError as exc:
        raise StorageError(f"cannot write the authkey file {path}: "
                           f"{exc.strerror or exc}") from exc
    return Authkey(key, str(path), fresh=True, folders_made=folders_made)


def _missing_folders(folder: Path) -> tuple[Path, ...]:
    """``folder`` and those of its parents that are not there yet, deepest first."""
    missing = []
    for one in (folder, *folder.parents):
        if one.exists():
            break
        missing.append(one)
    return tuple(missing)


def forget_if_refused(authkey: Authkey, error: BaseException) -> None:
    """A master refused as it started (its port taken: status 4; bad usage, settings, a
    request file or proxy variable it cannot use, a folder that holds another crawl:
    status 2) served and recorded nothing: the key made for it goes, and the folders
    made for the key, so that nothing is left half-created."""
    refused = isinstance(error, BindError) or (
        isinstance(error, CrawlerError) and error.exit_code == AuthkeyError.exit_code)
    # Refused for the folder another master holds: the key may be that master's now (two
    # started together on a new folder: one made it, the other read it and took the lock).
    if not (refused and authkey.fresh) or isinstance(error, OutputFolderInUse):
        return
    Path(authkey.source).unlink(missing_ok=True)
    for folder in authkey.folders_made:  # deepest first; one holding anything else stays
        try:
            folder.rmdir()
        except OSError:
            break


def _write_new(path: Path, key: bytes) -> None:
    """Make ``path`` with ``key`` in it, readable by its owner only; FileExistsError if
    it is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key)
            file.flush()
            # On disk before its name is: else a power cut soon after could leave the
            # name with no key in it, which no master or worker can start with.
            os.fsync(file.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        raise


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_for_bind(authkey: Authkey, host: str) -> None:
    """Refuse a short key when the queue is reachable from other hosts."""
    if not is_loopback(host) and len(authkey.key) < MIN_REMOTE_BYTES:
        raise AuthkeyError(
            f"binding {host} exposes the queue to the network, which needs an authkey of at "
            f"least {MIN_REMOTE_BYTES} bytes (this one from {_named(authkey.source)} has "
            f"{len(authkey.key)}); {GENERATE_HINT}")


def _named(source: str) -> str:
    """Where a key came from, as the user gave it: the variable they set, not the
    word "environment"."""
    return {"environment": ENV_VAR, "argument": "the authkey argument"}.get(source, source)
