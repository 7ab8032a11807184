"""The command line: arguments, wiring, and the one place errors become messages and exit codes.

Exit status: 0 the command did its job (a crawl that completed, even with
some failed images); 1 a runtime failure (master unreachable, authkey
refused); 2 bad usage or settings; 3 the output folder cannot be written
(or its crawl journal is damaged); 4 the queue port cannot be bound; 5 no
seed page could be fetched (the message gives the cause: connection refused,
DNS, an untrusted certificate); 6 the Redis broker refuses the crawl's writes
for a reason of its own set-up (full, unable to save, a read-only replica, an
ACL); 7 a crawl that completed, found images and stored none; 120 what the
command printed could not be
written (a full disk, a closed pipe); 130 interrupted (Ctrl-C, SIGTERM or a
hang-up on the master, after saving its state).

``main(argv)`` always returns its status; only ``run()``, which the ``crawler``
command's entry point (``crawler.__main__``) calls, ends the process. This module
imports nothing heavy at the top: ``crawler --help`` loads no crawl code,
libcurl or lxml.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from crawler import __version__
from crawler.config import (
    BROKER_ENV,
    BROKER_PASSWORD_ENV,
    DEFAULT_CRAWL,
    DEFAULT_PORT,
    DEFAULTS,
    MAX_LOCAL_WORKERS,
    SETTINGS_ENV,
    Settings,
    ValueFault,
    find_settings,
    glob_hint,
    header_problem,
    is_pattern_setting,
    parse_address,
    parse_size,
    read_settings,
    regex_error,
    setting_type,
    setting_value,
    shown_value,
    without_password,
)
from crawler.errors import (
    AuthenticationFailed,
    AuthkeyError,
    BindError,
    CrawlerError,
    HungUp,
    StopSaid,
    StorageError,
    Terminated,
    UsageError,
    stopped_by,
)
from crawler.model.folders import make_folder
from crawler.model.openfiles import out_of_files, out_of_files_reason
from crawler.model.shellword import shell_word

if typing.TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from crawler.api import Summary as ApiSummary
    from crawler.board.broker import BrokerAddress
    from crawler.master.authkey import Authkey

log = logging.getLogger("crawler")

EXIT_INTERRUPTED = 130
EXIT_FAILED = 1  # a runtime failure no error of ours names (see the exit status table)
EXIT_OUTPUT_LOST = 120  # what Python exits with when it cannot flush stdout
# A crawl that completed and found images, none of which it could store: a script that
# looks at the status alone (a nightly job, a pipeline) must not take it for one that did.
EXIT_NOTHING_STORED = 7
COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def size(text: str) -> int:
    """A flag's byte count: ``10M``, ``64k``, ``1G`` (powers of 1024) or plain bytes."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def count(text: str) -> int:
    """A flag's whole number (``N``): argparse's own "invalid int value" said no more."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def seconds(text: str) -> float:
    """A flag's seconds (``SEC``), as a plain number: settings.toml takes no unit either."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds as a plain number (such as 2 or 0.5, no unit), not {text!r}"
        ) from None


def file_path(text: str) -> Path:
    """A flag's file or folder: an empty one (``--settings ''``) is no path, where Path
    would make it the current folder ("." is a folder, not a settings file). A leading
    ``~`` is the home folder, as ``--out`` and ``--cookies`` take it: no shell expands
    ``--settings=~/s.toml``, the tilde following ``=``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a file")
    return Path(_home_expanded(text))


def seed_file(text: str) -> str:
    """``-i``'s file (``-``: standard input); not an empty name; ``~`` as for any file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a seed file, or - for "
                                         "standard input")
    return _home_expanded(text)


def _home_expanded(text: str) -> str:
    if text.startswith("~"):
        with contextlib.suppress(RuntimeError):  # no such user: as written, as a shell does
            return str(Path(text).expanduser())
    return text


# Flags that override one setting each: (flag, settings key, type, metavar, help).
# A flag whose setting is a list may be given more than once.
SETTING_FLAGS: dict[str, list[tuple[str, str, Any, str, str]]] = {
    "master": [
        ("--depth", "crawl.depth", count, "N",
         "link hops to follow from the seeds (0: seeds only)"),
        ("--max-pages", "crawl.max_pages", count, "N", "stop after N pages (0: no limit)"),
        ("--max-images", "crawl.max_images", count, "N", "queue at most N images (0: no limit)"),
        ("--scope", "crawl.scope", str, "MODE",
         "which pages to crawl: host (the seed hosts and their www. twins), domain (and "
         "subdomains), any"),
        ("--allow", "crawl.allow", str, "REGEX",
         "follow only links to pages whose URL matches REGEX (repeatable: any of them); "
         "the seeds are read whatever they are"),
        ("--deny", "crawl.deny", str, "REGEX",
         "never follow links to pages whose URL matches REGEX (repeatable)"),
        ("--accept", "crawl.image_allow", str, "REGEX",
         "queue only image URLs matching REGEX (repeatable: any of them); the URLs an "
         "image redirects to must match too"),
        ("--reject", "crawl.image_deny", str, "REGEX",
         "never queue image URLs matching REGEX (repeatable), nor follow an image's "
         "redirect to one"),
        ("--page-concurrency", "crawl.page_concurrency", count, "N", "pages fetched at once"),
        ("--user-agent", "crawl.user_agent", str, "TEXT", "User-Agent header"),
        ("--host-delay", "politeness.host_delay", seconds, "SEC",
         "seconds between two images handed out for one host, across all workers (and"
         " between two of its pages)"),
        ("--host-concurrency", "politeness.host_concurrency", count, "N",
         "images of one host in flight at once, across all workers"),
        ("--max-attempts", "download.max_attempts", count, "N",
         "tries per image, page and style sheet for transient failures"),
        ("--max-bytes", "download.max_bytes", size, "SIZE",
         "largest image accepted: bytes, or with k, M, G (powers of 1024)"),
        ("--max-page-bytes", "crawl.max_page_bytes", size, "SIZE",
         "longest page or style sheet read whole (a longer one is read up to there): "
         "bytes, or with k, M, G"),
        ("--lease-timeout", "queue.lease_timeout", seconds, "SEC",
         "seconds without news from a tutorial worker before its images go to others "
         "(ours: queue.worker_silence)"),
        ("--bind", "queue.bind", str, "HOST:PORT",
         f"address of the queue (default: 127.0.0.1:{DEFAULT_PORT}; 0.0.0.0:PORT for "
         "workers on other hosts)"),
        ("--out", "output.dir", str, "DIR", "output folder (default: downloads/)"),
        ("--threads", "worker.threads", count, "N", "downloads in flight per local worker"),
        ("--cookies", "http.cookies", str, "FILE",
         "send the cookies of this Netscape cookies.txt file (pages and images)"),
        ("--netrc", "http.netrc", str, "FILE", "logins per host from this netrc file"),
        ("--ca-bundle", "http.ca_bundle", str, "FILE",
         "trust the CAs in this PEM file (a private CA) instead of the system's"),
        ("--client-cert", "http.client_cert", str, "FILE",
         "present this client certificate (PEM; with its key unless --client-key)"),
        ("--client-key", "http.client_key", str, "FILE",
         "the client certificate's key, when in a file of its own (with --client-cert)"),
        ("--proxy", "http.proxy", str, "URL",
         "proxy for every request: http://, https://, socks5:// or socks5h:// (default: "
         "HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY from the environment; '': no "
         "proxy at all, as --no-proxy)"),
        ("--limit-rate", "http.limit_rate", str, "RATE",
         "bandwidth cap in bytes/s of each worker (its downloads together) and of each of "
         "the master's requests, with k, M or G (e.g. 2M; 0: none)"),
    ],
    "worker": [
        ("--threads", "worker.threads", count, "N", "downloads in flight at once"),
        ("--connect-wait", "worker.connect_wait", seconds, "SEC",
         "how long to wait for the master or the broker (at start and after losing it) "
         "before giving up"),
        ("--out", "output.dir", str, "DIR", "where to store images (default: downloads/)"),
        ("--client-cert", "http.client_cert", str, "FILE",
         "present this client certificate (PEM) instead of the master's"),
        ("--client-key", "http.client_key", str, "FILE",
         "the client certificate's key, when in a file of its own (with --client-cert)"),
    ],
    "demo": [
        ("--out", "output.dir", str, "DIR",
         "the demo's crawl goes into DIR/demo (default: downloads/)"),
    ],
}
# Other names a setting flag answers to, kept so that scripts written for them still run.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "--threads": ("--worker-threads",),
}
# The commands that read a settings file; the others need none.
READS_SETTINGS = frozenset({"master", "worker", "demo"})


def _is_list_setting(key: str) -> bool:
    return typing.get_origin(setting_type(key)) is tuple


def _default_text(key: str) -> str:
    """' (default: VALUE)' for a setting's flag help, or '' where it has none to show
    (an empty list, an unset path)."""
    section, name = key.split(".", 1)
    value = getattr(getattr(DEFAULTS, section), name)
    if value is None or value == "" or value == () or isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f" (default: {value})"


@functools.cache
def _parser() -> _Parser:
    """The command line's parser, built once a process: a local worker forked from its
    master finds it built (it took each worker 2-4 ms to build its own)."""
    return build_parser()


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that help it cannot write is not ignored: argparse
    drops an OSError there, so ``crawler --help > /dev/full`` exited 0. It reaches
    ``main`` now, which says so by the exit status, as for any output lost."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            (file or sys.stderr).write(message)

    # The top parser's commands, by name (build_parser fills it).
    commands: Mapping[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        """One line for a wrong argument, and where to read more: the master's usage
        alone is 17 lines, and the mistake was said under them."""
        commands = getattr(self, "commands", None)
        wrong = message.partition("invalid choice: ")[2].partition(" (choose from")[0]
        if commands and message.startswith("argument COMMAND: ") and wrong:
            import difflib  # only a mistyped command needs it

            close = difflib.get_close_matches(wrong.strip("'"), list(commands), n=1)
            if close:  # "mastr": as a mistyped flag is told its flag
                message = f"unknown command {wrong} (did you mean {close[0]}?)"
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"Run '{self.prog} --help' for what it takes.\n")

    def parse_command_line(self, given: Sequence[str]) -> argparse.Namespace:
        """``parse_args``, except that arguments no parser knew are said by the command's
        parser, as its other errors are: argparse says them through the top one, so that
        ``crawler master URL --bogus`` read "crawler: error" and "Run 'crawler --help'".
        A command's options written before its name are said to go after it:
        ``crawler -q master URL`` was "unrecognized arguments: -q", though master takes
        -q, and ``crawler --settings s.toml master`` took s.toml for the command."""
        self._say_options_before_the_command(given)
        args, unknown = self.parse_known_args(given)
        if unknown:
            command = self.commands.get(getattr(args, "command", None) or "", self)
            version = [word for word in unknown if word in ("-V", "--version")]
            if version:  # crawler's own, not a command's
                command.error(f"{version[0]} goes before the command's name: "
                              f"crawler {version[0]}")
            command.error(f"unrecognized arguments: {' '.join(unknown)}"
                          f"{_meant(unknown, command)}")
        return args

    def _say_options_before_the_command(self, given: Sequence[str]) -> None:
        """Error out when the words before a command's name are all options of that
        command (with their values); anything else is left to argparse, which says an
        unknown option or command as such."""

        for at, word in enumerate(given):
            if word not in self.commands or not at:
                continue
            before = given[:at]
            if _options_of(self.commands[word], before):
                line = shlex.join(["crawler", word, *before, *given[at + 1:]])
                self.commands[word].error(f"{before[0]} goes after the command's name: "
                                          f"{line}")


def _options_of(parser: argparse.ArgumentParser, words: Sequence[str]) -> bool:
    """Whether ``words`` are options of ``parser``, each with its value where it takes one
    (``-o demo master``: "demo" is -o's value, not the command)."""
    actions = {flag: action for action in parser._actions for flag in action.option_strings}
    at = 0
    while at < len(words):
        flag, equals, _ = words[at].partition("=")
        action = actions.get(flag)
        if action is None or action.option_strings == ["-h", "--help"]:
            return False
        at += 1
        if action.nargs == 0 and equals:  # "--quiet=1": no value is taken there either
            return False
        if action.nargs != 0 and not equals:  # its value is the next word
            if at >= len(words):
                return False
            at += 1
    return True


def _meant(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """``" (did you mean --depth?)"`` for the first unknown flag close to one ``parser``
    knows; "" when none is. Flags are never taken by a prefix of their name (argparse's
    default): ``--dept 1`` ran a crawl as ``--depth 1``, and a flag added later would
    have given an old abbreviation another meaning."""
    import difflib  # here: only a mistyped command line needs it

    # Compared without their dashes, which every flag shares ("--bogus" was near "--out").
    known = [flag[2:] for action in parser._actions for flag in action.option_strings
             if flag.startswith("--")]
    for word in unknown:
        if word.startswith("--"):
            close = difflib.get_close_matches(word[2:].split("=", 1)[0], known, n=1,
                                              cutoff=0.8)
            if close:
                return f" (did you mean --{close[0]}?)"
    return ""


def build_parser() -> _Parser:
    parser = _Parser(
        prog="crawler", allow_abbrev=False,
        description="A distributed web-image crawler: a master finds image URLs and serves "
                    "them on a network queue; workers on any hosts download them.",
        epilog="Run 'crawler COMMAND --help' for each command. Start with: crawler demo. "
               "Shell completion: crawler completion bash (or zsh, tcsh).")
    parser.add_argument("-V", "--version", action="version", version=f"crawler {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = commands.choices

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description,
                                  allow_abbrev=False)
        if name in READS_SETTINGS:
            sub.add_argument("--settings", type=file_path, metavar="FILE",
                             help=f"settings file (default: ${SETTINGS_ENV}, else "
                                  "./settings.toml if it is the crawler's, else "
                                  "~/.config/crawler/settings.toml)")
        noise = sub.add_mutually_exclusive_group()
        # Only the commands that show progress offer -q; the others take it, unsaid, for
        # the scripts written when they offered it.
        noise.add_argument("-q", "--quiet", action="store_true",
                           help="no progress lines and no closing summary (warnings and "
                                "errors still show)" if name in READS_SETTINGS
                           else argparse.SUPPRESS)
        noise.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        sub.add_argument("-o", "--log-file", type=file_path, metavar="FILE",
                         help="write log lines to FILE (appended, with timestamps) instead "
                              "of the terminal")
        for flag, key, kind, metavar, help_line in SETTING_FLAGS.get(name, []):
            repeat = _is_list_setting(key)
            default = "" if "(default" in help_line else _default_text(key)
            sub.add_argument(flag, *FLAG_ALIASES.get(flag, ()), dest="set:" + key, type=kind,
                             metavar=metavar, action="append" if repeat else "store",
                             help=f"{help_line}{default} [{key}]")
        return sub

    def broker_flags(sub: argparse.ArgumentParser, crawl_help: str) -> Any:
        group = sub.add_argument_group(
            "Redis broker", "keep the crawl's state in Redis instead of the master's memory "
            "(several masters, workers that outlive a master)")
        group.add_argument("--broker", metavar="URL",
                           help="redis://[USER@]HOST:PORT/DB, or rediss:// for TLS "
                                f"(default: ${BROKER_ENV}; --broker '' for none); the password "
                                f"comes from --broker-password-file or ${BROKER_PASSWORD_ENV}, "
                                "never the URL")
        group.add_argument("--crawl", metavar="NAME", help=crawl_help)
        group.add_argument("--broker-password-file", type=file_path, metavar="FILE",
                           help="file holding the broker's password")
        group.add_argument("--broker-ca", type=file_path, metavar="FILE",
                           help="CA certificate(s) to check a rediss:// broker against "
                                "(default: the system's)")
        return group

    master = command("master", "crawl a site and serve its images to workers",
                     "Crawl pages from the seed URLs, queue every image found for the workers, "
                     "and write results.log and manifest.jsonl into the output folder. Started "
                     "again on the same output folder, it resumes.")
    master.epilog = ("Exit status: 0 the crawl completed and stored images (some may have "
                     "failed), or found none, or was a dry run; 7 it found images and stored "
                     "none; 5 no seed page could be fetched; 130 interrupted, its state saved "
                     "(the same command resumes); 120 its output could not be written; 1-4 "
                     "and 6 errors the message names (README.md, Exit status).")
    master.add_argument("seeds", nargs="*", metavar="URL",
                        help="seed page URL(s), http or https; example.com means "
                             "https://example.com/")
    master.add_argument("-i", "--input-file", type=seed_file, metavar="FILE",
                        help="read seed URLs from FILE, one a line ('-': standard input; "
                             "blank lines and # comments, a line's own or after its URL, "
                             "are skipped)")
    master.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object on standard output at "
                             "the end (it is always written to OUT/summary.json)")
    master.add_argument("--local-workers", type=count, default=0, metavar="N",
                        help="also start N workers on this machine, at most "
                             f"{MAX_LOCAL_WORKERS} (default: 0, and the images wait for "
                             "workers started as the master says)")
    master.add_argument("--authkey-file", type=file_path, metavar="FILE",
                        help="file holding the queue's authkey (default: the key itself in "
                             "$CRAWLER_AUTHKEY, else OUT/authkey, made with a new key the "
                             "first time)")
    master.add_argument("--dry-run", action="store_true",
                        help="crawl pages and print the image URLs, download nothing")
    master.add_argument("--ignore-robots", action="store_true",
                        help="do not obey robots.txt (what an earlier run into the same "
                             "folder refused for it stays refused: add --fresh) "
                             "[crawl.respect_robots = false]")
    again = master.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="go on with the output folder's crawl even if this run's seeds or "
                            "scope differ (a run with the same ones resumes by itself)")
    again.add_argument("--fresh", action="store_true",
                       help="forget the output folder's crawl (journal, results, summary and "
                            "gallery; stored images stay) and start anew")
    master.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                        help="send this header with every request; repeatable [http.headers]")
    master.add_argument("--insecure", action="store_true",
                        help="do NOT verify TLS certificates (unsafe) [http.insecure = true]")
    master.add_argument("--no-proxy", action="store_true",
                        help="use no proxy: neither the settings file's http.proxy nor "
                             "HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY "
                             "[http.proxy = \"\", http.env_proxies = false]")
    on_broker = broker_flags(master, f"the crawl's name on the broker (default: "
                                     f"{DEFAULT_CRAWL!r})")
    on_broker.add_argument("--join", metavar="NAME",
                           help="help with the running crawl NAME (its seeds and settings), "
                                "fetching and parsing its pages beside its other masters")

    worker = command("worker", "download images for a master",
                     "Connect to a master's queue (or, with --broker, to a crawl on a Redis "
                     "broker), download the images it hands out into the output folder, and "
                     "report each one. Ends when the crawl is over.")
    worker.add_argument("master", metavar="HOST:PORT", nargs="?",
                        help="the master's queue address (or --broker)")
    worker.add_argument("--authkey-file", type=file_path, metavar="FILE",
                        help="file holding the master's authkey (default: the key itself in "
                             "$CRAWLER_AUTHKEY)")
    worker.add_argument("--no-proxy", action="store_true",
                        help="ignore HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY on "
                             "this host")
    # Gone with the fast lane: refused with a message, not an argparse error.
    worker.add_argument("--no-fast-lane", action="store_true", help=argparse.SUPPRESS)
    broker_flags(worker, "the crawl to work for (default: the broker's only crawl)")

    demo = command("demo", "crawl a built-in demo site (no internet needed)",
                   "Serve a small image site on 127.0.0.1, crawl it with a master and "
                   "local workers (--workers), and show where the images went and the "
                   "gallery's address (-q shows only the warnings).")
    demo.add_argument("--workers", type=count, default=2, metavar="N",
                      help="local workers (default: 2)")

    status = command("status", "show what a running master is doing",
                     "Ask a running master for its counts, in-flight work and workers.")
    status.add_argument("master", metavar="HOST:PORT", nargs="?",
                        help="the master's queue address, or the output folder a master "
                             "on this host is crawling into (or --broker)")
    status.add_argument("--authkey-file", type=file_path, metavar="FILE",
                        help="file holding the master's authkey (default: the key itself in "
                             "$CRAWLER_AUTHKEY, else a folder's own authkey)")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    broker_flags(status, "the crawl to show (default: the broker's only crawl)")

    report = command("report", "write an HTML gallery of a finished crawl",
                     "Write OUTPUT_DIR/index.html: the images found, grouped by page, with "
                     "filters and a full-size view, and the failed images and pages with their "
                     "reasons. Opens from disk, no server needed. More folders (a worker's "
                     "output copied from another host, another crawl) are merged into the "
                     "report of the first.")
    report.add_argument("output_dirs", type=Path, nargs="+", metavar="OUTPUT_DIR",
                        help="a crawl's output folder (the report goes into the first)")

    completion = command("completion", "print a shell completion script",
                         "Print the completion script for SHELL on standard output. bash: "
                         "crawler completion bash > ~/.local/share/bash-completion/"
                         "completions/crawler; zsh: crawler completion zsh > "
                         "\"${fpath[1]}/_crawler\".")
    completion.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL",
                            help=f"one of {', '.join(COMPLETION_SHELLS)}")
    return parser


def run() -> NoReturn:
    """The ``crawler`` command: ``main``, then an exit that skips the interpreter's teardown.

    By the time ``main`` returns, every file is closed and every result recorded;
    what is left is freeing the crawl's objects one by one, which took a master
    30 ms of CPU after a 5,000-image crawl, and joining idle threads (or, after a
    second Ctrl-C, helper threads still waiting on a robots.txt).
    """
    from crawler.ui.standard_streams import hold_closed_descriptors, keep_going_without_stderr

    hold_closed_descriptors()  # >&- and 2>&-: no file of the crawl gets descriptor 1 or 2
    keep_going_without_stderr()  # a reader of stderr that quits early ends no crawl
    try:
        code = main()
    except KeyboardInterrupt as stop:  # before main's own handling began: nothing to save yet
        with contextlib.suppress(OSError, ValueError):
            print(f"crawler: {stopped_by(stop)}", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:
            pass  # closed by the command itself: nothing left to write
        except OSError as exc:
            # Output lost (a full disk, a closed pipe): say so by the status, as
            # Python's own exit does, and keep a more specific one. A 120 was said
            # already, as the write failed: the bytes it left buffered fail again here.
            if stream is sys.stdout and code != EXIT_OUTPUT_LOST:
                _say_output_lost(exc)
            code = code or EXIT_OUTPUT_LOST
    os._exit(code)


def _say_output_lost(exc: OSError) -> None:
    """One line on standard error, where it can still be written; else nothing more."""
    from crawler.model.progress import output_lost

    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"crawler: error: {output_lost(exc)}\n")
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``crawler`` command; return its exit status (never exits the process).

    A second Ctrl-C during a crawl returns 130 at once; threads still waiting on
    a page request are left to ``run()``, which ends the process without
    joining them (the journal is transactional: nothing half-written remains).
    """
    given = sys.argv[1:] if argv is None else list(argv)
    try:
        if not given:  # "crawler" alone: what it can do, rather than what was missing
            _parser().print_help(sys.stderr)
            return 2
        args = _parser().parse_command_line(given)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except OSError as exc:  # the help or the usage message could not be written
        _say_output_lost(exc)
        return EXIT_OUTPUT_LOST
    try:
        log_handler = _log_handler(args.verbose, args.log_file)
    except StorageError as exc:
        print(f"crawler: error: {exc}", file=sys.stderr)
        return exc.exit_code
    with _logging_for(log_handler, args.verbose, args.quiet, args.log_file is not None):
        status = _run_command(args)
    if (isinstance(log_handler, _LogFile) and log_handler.failure is not None
            and status in (0, EXIT_NOTHING_STORED)):
        return StorageError.exit_code  # the log was said lost when it happened
    return status


def _run_command(args: argparse.Namespace) -> int:
    try:
        handler = {"master": _master, "worker": _worker, "demo": _demo,
                   "status": _status, "report": _report,
                   "completion": _completion}[args.command]
        settings = _settings(args) if args.command in READS_SETTINGS else Settings()
        return handler(args, settings)
    except CrawlerError as exc:
        message = _naming_where_it_was_set(str(exc), getattr(args, "flag_of_key", {}),
                                           getattr(args, "file_of_key", {}),
                                           getattr(args, "settings_found", ""))
        bind_file = getattr(args, "file_of_key", {}).get("queue.bind")
        if isinstance(exc, BindError) and bind_file and "queue.bind" not in getattr(
                args, "flag_of_key", {}):  # the port is the file's: say which file
            message += f"; that address is queue.bind in {bind_file}"
        print(f"crawler: error: {message}", file=sys.stderr)
        if args.log_file is not None:
            log.error("%s", message)
        return exc.exit_code
    except OSError as exc:
        if not out_of_files(exc):
            raise
        # Where no step says it for itself (a master's wake-up pipe at start): a line, with
        # what to do, not a traceback.
        print(f"crawler: error: {out_of_files_reason()}", file=sys.stderr)
        if args.log_file is not None:
            log.error("%s", out_of_files_reason())
        return EXIT_FAILED
    except KeyboardInterrupt as stop:
        if isinstance(stop, StopSaid):
            return EXIT_INTERRUPTED
        if args.command == "worker" and isinstance(stop, Terminated | HungUp):
            # As for a SIGTERM or a hang-up the worker handles.
            return _worker_stopped("SIGTERM" if isinstance(stop, Terminated) else "SIGHUP")
        print(f"crawler: {stopped_by(stop)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


class _logging_for:  # noqa: N801 - used as a context manager, like contextlib's
    """The command's logging: the root logger's handler and level for the command's
    run, and what they were before afterwards (``main`` may run inside another
    program, or a test)."""

    def __init__(self, handler: logging.Handler, verbose: bool, quiet: bool,
                 close: bool) -> None:
        self._handler, self._verbose, self._quiet, self._close = handler, verbose, quiet, close
        self._saved: list[tuple[logging.Logger, list[logging.Handler], int]] = []

    def __enter__(self) -> None:
        verbose, quiet = self._verbose, self._quiet
        root = logging.getLogger()
        self._saved = [(root, root.handlers[:], root.level)]
        root.handlers[:] = [self._handler]
        root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)

    def __exit__(self, *exc: object) -> None:
        for logger, handlers, level in self._saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
        if self._close:
            self._handler.close()


class _LogFile(logging.FileHandler):
    """The ``-o`` log file. A write that fails (a full disk) is said once, on stderr, and
    makes the command's status 3; not a traceback per line, as logging's own would be."""

    def __init__(self, path: Path, encoding: str) -> None:
        super().__init__(path, encoding=encoding)
        self.failure: OSError | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)  # a bug in a log call: logging says which
        elif self.failure is None:
            self._failed(error)

    def close(self) -> None:
        try:
            super().close()  # flushes what is buffered
        except OSError as error:
            if self.failure is None:
                self._failed(error)

    def _failed(self, error: OSError) -> None:
        self.failure = error
        print(f"crawler: error: cannot write the log file {self.baseFilename}: "
              f"{error.strerror or error}; its lines from here on are lost", file=sys.stderr)


def _log_handler(verbose: bool, log_file: Path | None) -> logging.Handler:
    if log_file is None:
        from crawler.ui.progress import make_log_handler

        return make_log_handler(verbose)
    detail = "%(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s"
    # Its folder too (-o OUT/crawl.log on a first run, before OUT is made).
    make_folder(log_file.parent, "the log file's folder")
    try:
        handler = _LogFile(log_file, encoding="utf-8")
    except OSError as exc:
        # Before any work: a log that cannot be written would lose what went wrong.
        raise StorageError(f"cannot write the log file {log_file}: "
                           f"{exc.strerror or exc}") from exc
    handler.setFormatter(logging.Formatter("%(asctime)s " + detail))
    return handler


def _settings(args: argparse.Namespace) -> Settings:
    source = find_settings(args.settings)
    for note in source.notes:
        log.debug("%s", note)
    settings = read_settings(source)
    args.file_of_key = {}  # the settings the file set, for errors found after it was read
    args.settings_found = source.found  # why a file nobody named was read, said with them
    if source.path is not None:
        log.debug("settings from %s", source.path)
        args.file_of_key = {f"{name}.{key}": str(source.path)
                            for name, section in settings._asdict().items()
                            for key, value in section._asdict().items()
                            if value != getattr(getattr(DEFAULTS, name), key)}
    overrides = {dest[4:]: value for dest, value in vars(args).items()
                 if dest.startswith("set:") and value is not None}
    args.flag_of_key = {}  # the settings this command line's flags set, for its errors
    if getattr(args, "ignore_robots", False):
        overrides["crawl.respect_robots"] = False
        args.flag_of_key["crawl.respect_robots"] = "--ignore-robots"
    if getattr(args, "no_fast_lane", False):
        raise UsageError("--no-fast-lane is gone: every download now goes through one libcurl "
                         "engine (http and https alike); drop the flag")
    if getattr(args, "insecure", False):
        overrides["http.insecure"] = True
        args.flag_of_key["http.insecure"] = "--insecure"
    if getattr(args, "no_proxy", False):
        if overrides.get("http.proxy"):
            raise UsageError("--proxy and --no-proxy: give one")
        overrides["http.env_proxies"] = False
        args.flag_of_key["http.env_proxies"] = "--no-proxy"
        if args.command == "master":  # no proxy at all, as wget's: the settings file's too
            overrides["http.proxy"] = ""  # (a worker uses its master's request settings)
    if getattr(args, "header", None):
        overrides["http.headers"] = (*settings.http.headers, *args.header)
        _check_flag("--header", "http.headers", tuple(args.header))
    for flag, key, *_ in SETTING_FLAGS.get(args.command, []):
        if key in overrides:
            _check_flag(flag, key, overrides[key])
            args.flag_of_key[key] = flag
    proxy = overrides.get("http.proxy")
    if isinstance(proxy, str) and without_password(proxy) != proxy:
        # Never logged, but every user of the host reads a command line: as a broker's
        # password there is refused and a seed's said. The settings file is the way that
        # keeps what --proxy does: its workers are sent it, where each process reads its
        # own $HTTPS_PROXY, and workers started elsewhere would go without the proxy.
        log.warning("--proxy %s: its password shows in ps to every user of this host for "
                    "the whole crawl; give the proxy's URL in http.proxy of a settings file "
                    "instead (its workers are sent it, as they are --proxy's; $HTTPS_PROXY "
                    "and $HTTP_PROXY serve only the processes started with them)",
                    without_password(proxy))
    return settings.with_values(overrides, "command line") if overrides else settings


def _flags_a_broker_master_ignores(args: argparse.Namespace) -> None:
    """A master on a broker serves no queue, its workers taking their images from Redis:
    its --bind and --authkey-file are said unused (they were taken in silence, and a
    joining master's --bind was said to be the crawl's)."""
    flag_of_key = getattr(args, "flag_of_key", {})
    named = {flag_of_key.pop("queue.bind")} if "queue.bind" in flag_of_key else set()
    if args.authkey_file is not None:
        named.add("--authkey-file")
    if named:
        log.warning("%s: a master on a broker serves no queue (its workers take their "
                    "images from Redis); not used", ", ".join(sorted(named)))


def _flags_a_joining_master_ignores(args: argparse.Namespace) -> None:
    """A master that joins a crawl takes its settings from the crawl: its flags for them
    are said unused, and an error about such a setting is not blamed on them."""
    from crawler.api import kept_by_a_joining_master

    flag_of_key = getattr(args, "flag_of_key", {})
    unused = {key: flag for key, flag in flag_of_key.items()
              if not kept_by_a_joining_master(key)}
    named = set(unused.values()) | ({"--header"} if getattr(args, "header", None) else set())
    if named:
        log.warning("%s: a master that joins a crawl takes these settings from the crawl; "
                    "not used", ", ".join(sorted(named)))
    for key in unused:
        del flag_of_key[key]
    # Nor is an error about such a setting the settings file's: the crawl's value it is.
    file_of_key = getattr(args, "file_of_key", {})
    for key in [key for key in file_of_key if not kept_by_a_joining_master(key)]:
        del file_of_key[key]


def _naming_where_it_was_set(message: str, flag_of_key: dict[str, str],
                             file_of_key: dict[str, str] | None = None,
                             found: str = "") -> str:
    """An error about a setting (``KEY: ...``) that a flag of this command line set names
    that flag too: the user typed ``--cookies``, not ``http.cookies``; one that a settings
    file set names the file, and why it was read when nobody named it (``found``), as an
    error found while reading it does."""
    key, colon, rest = message.partition(": ")
    flag = flag_of_key.get(key) if colon else None
    if flag:
        return f"{flag} ({key}): {rest}"
    settings_file = (file_of_key or {}).get(key) if colon else None
    if not settings_file:
        return message
    return f"{settings_file}: {message}" + (f" ({found})" if found else "")


def _check_flag(flag: str, key: str, value: Any) -> None:
    """UsageError naming ``flag`` and the value it was given, if ``value`` is no value
    of its setting ``key`` (rather than the setting's name and a Python tuple)."""
    values = value if isinstance(value, tuple | list) else (value,)
    for one in values:  # a repeatable flag: the one given that is wrong
        try:
            setting_value(key, (one,) if isinstance(value, tuple | list) else one)
        except ValueFault as exc:  # what is wrong with it, the value quoted
            raise UsageError(f"{flag} {exc}") from None
        except ValueError as exc:
            reason = regex_error(str(one)) if is_pattern_setting(key) else None
            expected = str(exc)
            for many, one_of in _ONE_OF_MANY.items():  # said of the list, here of one item
                expected = expected.replace(many, one_of)
            shown = format(one, "g") if isinstance(one, float) else repr(shown_value(key, one))
            if key == "http.headers":  # a header's value may be a token: its name only
                said = header_problem(str(one))
                if said:
                    raise UsageError(f"{flag} {said}") from None
            raise UsageError(f"{flag} {shown}: "
                             + (f"not a regular expression ({reason}){glob_hint(str(one))}"
                                if reason
                                else f"expected {expected}")) from None


_ONE_OF_MANY = {"a list of headers": "a header"}  # the only list setting a flag adds to


def _a_folder_for_an_address(text: str) -> bool:
    """Whether a master's HOST:PORT was given as a folder (its output folder, likely)."""
    return ":" not in text and Path(text).is_dir()


def _what_a_folder_holds(folder: Path) -> str:
    """Where the figures and gallery of the crawl in ``folder`` are, for one given as a
    master's address: an empty folder, or one a crawl has not written into, has none."""
    summary, manifest = folder / "summary.json", folder / "manifest.jsonl"
    said = []
    if summary.is_file():
        said.append(f"a crawl's figures are in {summary}")
    if manifest.is_file():
        said.append(f"crawler report {shell_word(folder)} makes its gallery")
    if not said:
        return f"; {folder} holds no crawl's results"
    return "; " + ", and ".join(said)


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise UsageError(f"bad master address: {exc}{_address_hint(text)}") from exc


def _address_hint(text: str) -> str:
    """What to give instead of a master's address written as a URL or without its port:
    the queue is no web server, and its port is the one the master printed."""
    from urllib.parse import urlsplit

    try:
        shaped = urlsplit(text if "//" in text else f"//{text}")
        host, port = shaped.hostname, shaped.port
    except ValueError:  # unbalanced brackets, a port that is no number: said as it is
        return ""
    if not host or ":" in host:  # an IPv6 address is said by parse_address
        return ""
    printed = "as the master printed it after 'queue on'"
    if port is None:
        return (f"; give its port too, {printed}: {host}:{DEFAULT_PORT} unless the master "
                "was given another --bind")
    return f"; give it {printed}, without a scheme or path: {host}:{port}"


# What the summary says of an interrupted crawl: a rerun goes on with it.
STATE_SAVED = "state saved; "
RESUME_NOTE = f"{STATE_SAVED}run the same command again to resume"


def run_master(settings: Settings, seeds: tuple[str, ...], authkey: Authkey, *,
               local_workers: int, dry_run: bool, quiet: bool, resume: bool = False,
               fresh: bool = False, invite_workers: bool = True,
               json_summary: bool = False, broker: BrokerAddress | None = None,
               crawl_name: str | None = None, join: bool = False,
               interrupted_note: str = RESUME_NOTE, schemeless: frozenset[str] = frozenset()
               ) -> int:
    """``crawler master`` (and the demo): the crawl, its progress on the terminal, the
    summary on stderr (or as JSON on stdout); 130 when it was interrupted.
    ``interrupted_note`` follows "crawl interrupted: " in the summary: what a rerun does."""
    from crawler.api import run_crawl
    from crawler.ui.progress import write_above_bars

    # Asked now: once the terminal hangs up, isatty() is false for it (EIO).
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]

    def note_stopping(signum: int) -> None:
        # From a thread of its own: the handler may run while this thread holds the
        # logging or tqdm lock. Written above the live lines, like any log line.
        if signum == signal.SIGHUP:
            _leave_the_terminal(terminal)  # gone: no note there, and no write may fail
            threading.Thread(target=log.warning, daemon=True, args=(  # for a log file (-o)
                "hang-up: stopping after the pages in flight; the state is saved",)).start()
            return
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM (or Ctrl-C)"
        threading.Thread(target=write_above_bars, daemon=True, args=(
            f"crawler: stopping after the pages in flight; {again} again to quit now",)).start()

    def show(summary: ApiSummary) -> None:
        if json_summary:
            write_out(summary.to_json())
        elif not dry_run and not quiet:
            print(format_summary(summary, on_broker=broker is not None,
                                 interrupted_note=interrupted_note,
                                 ca_bundle=settings.http.ca_bundle), file=sys.stderr)
        elif not quiet:
            # Standard output holds the list alone; that it is not the site's whole is said
            # beside it, or a list cut at --max-pages passed for all there is.
            if left := _left_out(summary, "a larger one lists more"):
                print("dry run: the crawl's limits left pages or images out\n"
                      + "\n".join(left), file=sys.stderr)
            if scope := _out_of_scope(summary):
                print("dry run: the crawl's scope left pages or images out\n"
                      + "\n".join(scope), file=sys.stderr)
            if summary.images_unlisted:
                print("dry run: robots.txt left images out\n"
                      + "\n".join(_unlisted(summary.images_unlisted)), file=sys.stderr)

    try:
        summary = run_crawl(settings, seeds, authkey, local_workers=local_workers,
                            dry_run=dry_run, resume=resume, fresh=fresh,
                            invite_workers=invite_workers, progress=not quiet,
                            announce=None if quiet or dry_run else write_above_bars,
                            on_signal_note=note_stopping, on_summary=show, broker=broker,
                            crawl_name=crawl_name, join=join, worker_command=main,
                            schemeless=schemeless)
    except KeyboardInterrupt as stop:
        if type(stop) is not KeyboardInterrupt or dry_run:
            raise  # a SIGTERM or hang-up as it starts is said by main; a dry run keeps nothing
        # A second stop quits with no summary: say what the first stop's summary says, that
        # the journal kept what was done (a bare "interrupted" left that a guess).
        print(f"crawler: interrupted; {interrupted_note.removeprefix(STATE_SAVED)}",
              file=sys.stderr, flush=True)
        raise StopSaid from stop  # quit now: the demo writes no gallery either
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if not dry_run and nothing_stored(summary):
        why = ("the summary's top failure reasons above" if not (quiet or json_summary)
               else f"failures_by_reason in {summary.summary_json or 'summary.json'}")
        log.warning("no image was stored: each of the %s found failed (%s say why); exit "
                    "status %d", _counted(summary.failed, "image"), why, EXIT_NOTHING_STORED)
        return EXIT_NOTHING_STORED
    return 0


def nothing_stored(summary: ApiSummary) -> bool:
    """A completed crawl that found images and stored none: every one of them failed."""
    return (summary.completed and summary.found > 0 and summary.succeeded == 0
            and summary.failed > 0)


def _leave_the_terminal(terminal: list[int]) -> None:
    """After a hang-up, the descriptors in ``terminal`` (standard output and error that
    were a terminal at the start) that are one no more (hung up: isatty() fails with EIO)
    go to /dev/null: every write there would fail and end the crawl before its state
    and summary are saved. A log file (-o) goes on; a SIGHUP sent by hand, the
    terminal still there, changes nothing."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in terminal:
                if not os.isatty(fd):
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def write_out(text: str) -> None:
    from crawler.model.progress import write_out as write

    write(text)


# Characters of a failure's reason the terminal summary shows (summary.json keeps it whole).
SHOWN_REASON_CHARS = 200


def _shown_reason(reason: str) -> str:
    """``reason`` cut for the terminal: a tutorial worker's may be 4,096 characters."""
    if len(reason) <= SHOWN_REASON_CHARS:
        return reason
    return reason[:SHOWN_REASON_CHARS - 1] + "\u2026"


def _left_out(summary: ApiSummary, larger: str) -> list[str]:
    """The summary's lines on what the crawl's limits left out; ``larger`` says what a
    larger limit does."""
    from crawler.model.files import images_left_shown

    return [
        *([f"  not visited     {summary.pages_left} pages found: the page budget "
           f"(--max-pages) was spent; {larger}"]
          if summary.pages_left else []),
        *([f"  depth limit     {summary.pages_at_depth_limit} pages at the last hop (--depth) "
           f"link to pages not visited; {larger}"]
          if summary.pages_at_depth_limit else []),
        *([f"  not queued      {images_left_shown(summary.images_left)} images found: the image "
           f"budget (--max-images) was spent; {larger}"]
          if summary.images_left else []),
        *([f"  cut short       {_counted(summary.pages_cut, 'page')} longer than "
           "--max-page-bytes (crawl.max_page_bytes), read up to there: their images and "
           "links past it are left out; with --fresh and a larger one, they are read whole"]
          if summary.pages_cut else []),
    ]


def _out_of_scope(summary: ApiSummary) -> list[str]:
    """The summary's lines on what the crawl's scope left out this run."""
    from crawler.master.leftout import MAX_HOSTS, MAX_IMAGES

    lines = []
    if summary.links_out_of_scope:
        hosts = summary.hosts_out_of_scope
        shown = ", ".join(f"{host} ({count})" for host, count
                          in list(summary.links_to_other_hosts.items())[:3])
        more = f" and {hosts - 3} more" if hosts > 3 else ""
        lines.append(
            f"  other hosts     {_counted(summary.links_out_of_scope, 'link')} to pages on "
            f"{'at least ' if hosts >= MAX_HOSTS else ''}{_counted(hosts, 'host')} out of "
            f"the crawl's scope, not followed (--scope): {shown}{more}")
    if summary.images_out_of_scope:
        images = summary.images_out_of_scope
        lines.append(f"  not accepted    {'at least ' if images >= MAX_IMAGES else ''}"
                     f"{_counted(images, 'image URL')} refused by --accept or --reject "
                     "(crawl.image_allow, crawl.image_deny)")
    return lines


def _unlisted(by_reason: dict[str, int]) -> list[str]:
    """A dry run's lines on the images robots.txt refused, by why."""
    from crawler.model.outcome import ROBOTS_UNREACHABLE

    lines = []
    for reason, count in by_reason.items():
        again = ("; a crawl reads it again, and may fetch them"
                 if reason.startswith(ROBOTS_UNREACHABLE) else "")
        lines.append(f"  not listed      {_counted(count, 'image URL')}: {reason}{again}")
    return lines


def _stored_elsewhere(summary: ApiSummary) -> list[str]:
    """The line on the images workers stored in folders of their own, by host: the
    output folder's images/ holds none of them."""
    if not summary.stored_elsewhere:
        return []
    away = sum(summary.stored_elsewhere.values())
    hosts = list(summary.stored_elsewhere.items())
    shown = ", ".join(f"{host} {count}" for host, count in hosts[:3])
    more = f" and {len(hosts) - 3} more" if len(hosts) > 3 else ""
    where = shell_word(str(summary.out_dir)) if summary.out_dir else "OUT"
    return [f"  elsewhere       {away} of them in workers' own --out folders, not in {where} "
            f"(by host: {shown}{more}): 'crawler report {where} WORKER_FOLDER' shows them "
            "with the rest (copy a folder from another host here first)"]


def _counted(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


def format_summary(summary: ApiSummary, *, on_broker: bool = False,
                   interrupted_note: str = RESUME_NOTE, ca_bundle: str = "") -> str:
    from crawler.ui.progress import human_bytes

    # A broker crawl's limits are its first master's: a rerun does not extend them.
    larger = ("a new crawl (another --crawl NAME and --out) with a larger one starts over"
              if on_broker else "a rerun with a larger one goes on")

    lines = [
        "crawl " + ("completed" if summary.completed else
                    f"interrupted: {interrupted_note}" if summary.interrupted else
                    "ended: no seed page could be fetched (below)"),
        f"  pages crawled   {summary.pages} ({summary.pages_failed} failed or skipped)",
        *_left_out(summary, larger),
        *_out_of_scope(summary),
        *([f"  to try again    {_to_retry(summary)} failed for a passing reason (a timeout, "
           "5xx, 429, a refused connection, an unreadable robots.txt, a TLS failure a setting "
           "fixes, a name taken in the image folder, a worker lost with it): the same command "
           "again tries them"]
          if summary.pages_to_retry or summary.images_to_retry else []),
        f"  images found    {summary.found}",
        f"  downloaded      {summary.succeeded} ({human_bytes(summary.bytes)})",
        *_stored_elsewhere(summary),
        f"  failed          {summary.failed}",
        f"  elapsed         {summary.elapsed_s:.1f} s, {_rate(summary.images_per_second)} "
        "images/s",
    ]
    if summary.failures_by_reason:
        lines.append("  top failure reasons:")
        reasons = list(summary.failures_by_reason.items())
        lines += [f"    {count:6d}  {_shown_reason(reason)}" for reason, count in reasons[:5]]
        if len(reasons) > 5:
            lines.append(f"    {sum(count for _, count in reasons[5:]):6d}  for "
                         f"{len(reasons) - 5} other reason(s): failures_by_reason in "
                         f"{summary.summary_json or 'summary.json'}")
    from crawler.fetch.engine import signed_by_an_unknown_ca

    if any(map(signed_by_an_unknown_ca, summary.failures_by_reason)):
        # Said of a seed when it fails; an image host's own CA was left to guess. (Told
        # to give a bundle when one was given, the user looked for another flag.)
        lines.append(f"  (a certificate not trusted: no CA of {ca_bundle} (--ca-bundle) "
                     "signs it; give the one that does)" if ca_bundle else
                     "  (a certificate not trusted: if a CA of your own signs it, "
                     "--ca-bundle FILE trusts it)")
    failing = sorted(((counts["failed"], host) for host, counts in summary.hosts.items()
                      if counts["failed"]), reverse=True)[:5]
    if failing:
        lines.append("  hosts with most failures:")
        lines += [f"    {count:6d}  {host}" for count, host in failing]
    out = summary.out_dir
    lines.append(f"  results in      {out}/results.log and {out}/manifest.jsonl")
    if summary.pages_failed:
        lines.append(f"  pages failed in {out}/pages.jsonl (each with its reason)")
    lines.append(f"  statistics in   {summary.summary_json}")
    return "\n".join(lines)


def _rate(per_second: float) -> str:
    """A rate to one decimal, or below 1 to two significant digits: 8 images in 392 s
    read "0.0 images/s", as if none had been stored."""
    if not 0 < per_second < 1:
        return f"{per_second:.1f}"
    decimals = 1 - math.floor(math.log10(per_second))  # two significant digits
    return f"{per_second:.{decimals}f}"


def _to_retry(summary: ApiSummary) -> str:
    counts = [f"{n} {what}" for n, what in ((summary.pages_to_retry, "page(s)"),
                                             (summary.images_to_retry, "image(s)")) if n]
    return " and ".join(counts)


_MORE_WORKERS = " (for more, start crawler worker on other hosts)"


def _master(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.api import read_seed_file, schemeless_seeds, seed_urls
    from crawler.master.authkey import Authkey, forget_if_refused, master_authkey
    from crawler.master.journal import check_room_for_journal

    if not 0 <= args.local_workers <= MAX_LOCAL_WORKERS:
        raise UsageError(f"--local-workers {args.local_workers}: expected 0 to "
                         f"{MAX_LOCAL_WORKERS}{_MORE_WORKERS}")
    if args.dry_run and args.json:
        raise UsageError("--dry-run lists image URLs on standard output, where --json would "
                         "write the summary too: use one of them")
    if args.dry_run and args.local_workers:
        log.warning("--local-workers %d: a dry run downloads nothing, so it starts no "
                    "workers", args.local_workers)
    urls = list(args.seeds)
    if args.input_file is not None:
        if args.input_file == "-":
            _prompt_for_seeds()
        urls += read_seed_file(args.input_file)
    named_by = "--broker" if args.broker is not None else f"${BROKER_ENV}"
    if (args.dry_run and args.broker is None and not (args.join or args.crawl)
            and os.environ.get(BROKER_ENV)):
        # A dry run records nothing: the broker a shell's environment names for every
        # command is not needed, nor read (refused, it blamed a --broker never given).
        for flag in ("broker_password_file", "broker_ca"):
            if getattr(args, flag, None) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} is for a broker, and a dry "
                                 "run uses none: drop it")
        log.info("a dry run records nothing: the broker $%s names is not used", BROKER_ENV)
        broker = None
    else:
        broker = _broker(args)
    if args.join is not None:
        if broker is None:
            raise UsageError(f"--join needs the broker the crawl is on: --broker URL or "
                             f"${BROKER_ENV}")
        if urls:
            raise UsageError("--join takes the crawl's seeds from the broker: give no URL")
        if args.crawl is not None and args.crawl != args.join:
            raise UsageError("--join names the crawl already: drop --crawl")
        _flags_a_broker_master_ignores(args)
        _flags_a_joining_master_ignores(args)
    elif broker is not None:
        _flags_a_broker_master_ignores(args)
    elif not urls:
        given = "standard input" if args.input_file == "-" else args.input_file
        raise UsageError(f"no seed URL: {given} holds none (only blank lines and comments)"
                         if args.input_file is not None else
                         "no seed URL: give one or more URLs, or -i FILE")
    seeds = seed_urls(urls) if urls else ()  # a mistyped seed is said before a key is made
    if broker is not None:
        if args.dry_run:
            raise UsageError("--dry-run records nothing, on a broker or elsewhere: drop "
                             + ("--broker" if named_by == "--broker" else "--crawl and --join"))
        if args.resume or args.fresh:
            drop = ("" if named_by == "--broker" else
                    f"; or, for a crawl of the output folder, unset ${BROKER_ENV} (or give "
                    "--broker '')")
            raise UsageError(f"--resume and --fresh are about the output folder's journal; on a "
                             f"broker ({named_by} names one), the crawl's state is there: start "
                             f"the same crawl again to carry on, or name a new one with --crawl"
                             f"{drop}")
        authkey = Authkey()  # no queue served: workers log in to the broker
    else:
        if not args.dry_run:  # before anything is made in the folder
            check_room_for_journal(Path(settings.output.dir))
        authkey = master_authkey(args.authkey_file, Path(settings.output.dir),
                                 keep=not args.dry_run)
    try:
        return run_master(settings, seeds, authkey,
                          local_workers=args.local_workers, dry_run=args.dry_run,
                          quiet=args.quiet, resume=args.resume, fresh=args.fresh,
                          json_summary=args.json, broker=broker,
                          crawl_name=args.join or args.crawl, join=args.join is not None,
                          schemeless=schemeless_seeds(urls))
    except CrawlerError as exc:
        forget_if_refused(authkey, exc)  # refused as it started: no key or folder left
        raise


def _broker(args: argparse.Namespace) -> BrokerAddress | None:
    """The broker named by --broker or $CRAWLER_BROKER, with its password; None: none."""
    for name in ("crawl", "join"):
        if getattr(args, name, None) is not None:
            from crawler.board.broker import check_crawl_name

            check_crawl_name(getattr(args, name))
    url, from_command_line = args.broker, True
    if url is not None and not url.strip():
        url = None  # --broker '': the embedded queue, whatever $CRAWLER_BROKER says
    elif url is None and os.environ.get(BROKER_ENV) and getattr(args, "master", None) is None:
        url, from_command_line = os.environ[BROKER_ENV], False
    if url is None:
        for flag in ("crawl", "broker_password_file", "broker_ca"):
            if getattr(args, flag, None) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} is for a broker: add --broker URL")
        return None
    from crawler.board.broker import parse_broker  # a crawl without one never imports it

    try:
        return parse_broker(url, password_file=args.broker_password_file,
                            from_command_line=from_command_line, ca_file=args.broker_ca)
    except UsageError as exc:
        if from_command_line:
            raise
        raise UsageError(f"${BROKER_ENV}: {exc}") from exc


def _prompt_for_seeds() -> None:
    """``-i -`` on a terminal: the seeds are typed there, and without a word the command
    looked hung. A pipe or a file is read as it is, unannounced."""
    with contextlib.suppress(OSError, ValueError):  # no standard input, or none to say it on
        if sys.stdin is not None and sys.stdin.isatty():
            sys.stderr.write("crawler: reading seed URLs from the terminal, one a line; "
                             "end with Ctrl-D\n")
            sys.stderr.flush()


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.api import check_proxy_variables, run_worker
    from crawler.fetch.options import client_certificate
    from crawler.master.authkey import MASTERS_KEY_HINT, load_authkey
    from crawler.model.wire import LOCAL_WORKER_ENV
    from crawler.ui.progress import WorkerLine

    broker = _broker(args)
    if broker is not None and args.master is not None:
        raise UsageError("give the master's HOST:PORT or --broker, not both")
    if broker is None and args.master is None:
        raise UsageError(f"no master: give its HOST:PORT, or --broker URL (or ${BROKER_ENV})")
    if args.master is not None:
        if _a_folder_for_an_address(args.master):
            raise UsageError(f"{args.master} is a folder: a worker joins a running master by "
                             "the HOST:PORT it printed as 'queue on HOST:PORT' (and stores "
                             "into --out DIR)")
        _address(args.master)  # a bad address is a usage error before the key is asked for
    # Read before any wait (a "~/cert.pem" of a settings file, which no shell expanded, too).
    client_certificate(settings.http)
    # A worker takes the crawl's request settings from its master: its own are not
    # read, but for its client certificate and whether to use the environment's proxy.
    own = [f"http.{name}" for name, value in settings.http._asdict().items()
           if name not in ("client_cert", "client_key", "env_proxies")
           and value != getattr(DEFAULTS.http, name)]
    if own and not os.environ.get(LOCAL_WORKER_ENV):  # a local worker's are its master's
        log.warning("%s: a worker takes the crawl's request settings from its master; "
                    "these of its own settings are not used", ", ".join(own))
    check_proxy_variables(settings)  # before any wait: for the key file, for the master
    authkey = None
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # asked before a hang-up, as the master
    if broker is None:
        stopped = _wait_for_key_file(args.authkey_file, settings.worker.connect_wait, terminal)
        if stopped:
            return _worker_stopped(stopped)
        try:
            authkey = load_authkey(args.authkey_file, generate=False,
                                   empty_hint=MASTERS_KEY_HINT)
        except AuthkeyError as exc:
            if args.authkey_file is not None:
                raise
            raise AuthkeyError(f"{exc}{_key_beside(settings.output.dir)}") from exc
    line = WorkerLine(quiet=args.quiet)
    try:
        reason = run_worker(args.master, out=settings.output.dir, settings=settings,
                            authkey=authkey.key if authkey else None,
                            # Quiet, no line is drawn: no callback, so no progress thread
                            # woken for each image (local workers are all quiet).
                            progress=None if args.quiet else line.update,
                            broker=broker, crawl_name=args.crawl,
                            on_signal_note=lambda signum: _note_worker_stopping(
                                signum, terminal),
                            on_quit_now=_quit_now).stop_reason
    finally:
        line.close()
    return _worker_stopped(reason) if reason else 0


def _key_beside(out_dir: str) -> str:
    """A worker given no key whose --out is a master's folder: that master's key is there,
    and the worker reads no key it was not told, but can say which flag names it."""
    from crawler.master.authkey import KEY_FILE_NAME

    key_file = Path(out_dir) / KEY_FILE_NAME
    if not key_file.is_file():
        return ""
    # Quoted, as the master's worker command is: the flag is pasted as it is.
    return f" (this worker's --out holds one: --authkey-file {shell_word(key_file)})"


def _note_worker_stopping(signum: int, terminal: list[int]) -> None:
    """What a worker says as a signal stops it: its hand-back waits on its master (up to a
    call's deadline, when the master answers no more), and a second stop quits now."""
    if signum == signal.SIGHUP:
        _leave_the_terminal(terminal)  # gone: no note there, and no write may fail
        return
    again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM (or Ctrl-C)"
    # From a thread of its own: the handler may run while this thread holds logging's lock.
    threading.Thread(target=log.info, daemon=True, args=(
        "stopping: handing the URLs this worker holds back to the master; %s again to "
        "quit now", again)).start()


def _quit_now() -> NoReturn:
    """A worker's second stop: exit from the signal handler itself. A KeyboardInterrupt
    raised there is swallowed when it lands in a finalizer (a thread that just ended),
    and the worker went on waiting for a master that answers no more. What it stored is
    whole on disk; the master gives what it held to others once it finds it silent."""
    # Nothing here may wait: the thread this handler interrupted, or another one, may hold
    # stderr's buffer or a log handler's lock (a write stalled on a paused terminal), and
    # a reentrant write to the buffer raises. So the line goes by the descriptor, and the
    # log files are flushed only where their lock is free at once.
    with contextlib.suppress(OSError, ValueError):
        live = os.isatty(2)  # below the worker's live line, not on it
        os.write(2, (("\n" if live else "") + "crawler: interrupted\n").encode())
    for handler in logging.getLogger().handlers:
        lock = handler.lock
        if lock is not None and lock.acquire(blocking=False):
            try:
                with contextlib.suppress(Exception):  # (a log file (-o) keeps its last lines)
                    handler.flush()
            finally:
                lock.release()
    os._exit(EXIT_INTERRUPTED)


def _worker_stopped(reason: str) -> int:
    log.info("worker stopped (%s)", reason)
    return EXIT_INTERRUPTED if reason == "interrupted" else 0


_STOP_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "SIGTERM",
                 signal.SIGHUP: "SIGHUP"}


def _wait_for_key_file(key_file: Path | None, wait: float, terminal: list[int]) -> str:
    """A worker started before its master's first run, told its key file in the master's
    output folder (OUT/authkey), waits for the master to make it, as it waits for the
    master itself; it exited 2 ("no such file") before. Returns "" or, when a signal
    ended the wait, the worker's stop reason for it: a SIGTERM or a hang-up here killed
    the worker by its default action, where one waiting for its master exits 0."""
    from crawler.api import _signals_handled_by
    from crawler.master.authkey import KEY_FILE_NAME
    from crawler.worker.masterlink import QUIET_WAIT, WaitNote

    # Only the master's own key file: a mistyped path to a copied one is said at once.
    if key_file is None or key_file.exists() or key_file.name != KEY_FILE_NAME:
        return ""
    stopped: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            _leave_the_terminal(terminal)
        stopped.append(_STOP_REASONS[signal.Signals(signum)])

    give_up = time.monotonic() + wait
    note = WaitNote(log)
    with _signals_handled_by(on_signal):
        while not key_file.exists() and not stopped and time.monotonic() < give_up:
            note.say(f"waiting for the key file {key_file} (a master makes it as it starts): "
                     f"for up to {wait:g} s",
                     f"still no key file {key_file} after {QUIET_WAIT:g} s (waiting for up to "
                     f"{wait:g} s in all): a master makes it as it starts; is "
                     f"{key_file.parent} the master's output folder (--out)?")
            time.sleep(0.2)
    if stopped:
        return stopped[0]
    # Made, then written: its key follows within moments (an empty file is said after).
    written_by = time.monotonic() + 1.0
    with contextlib.suppress(OSError):
        while key_file.stat().st_size == 0 and time.monotonic() < written_by:
            time.sleep(0.05)
    return ""


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.demo.demo import run_demo

    if args.workers < 1:
        raise UsageError("--workers must be 1 or more: the demo downloads with local workers")
    if args.workers > MAX_LOCAL_WORKERS:
        raise UsageError(f"--workers {args.workers}: at most {MAX_LOCAL_WORKERS}")
    return run_demo(settings, workers=args.workers, quiet=args.quiet, run_master=run_master)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from crawler.master.authkey import ENV_VAR, KEY_FILE_NAME, MASTERS_KEY_HINT, load_authkey
    from crawler.ui.status import fetch_broker_status, fetch_status, format_status

    broker = _broker(args)
    if broker is not None and args.master is not None:
        raise UsageError("give the master's HOST:PORT or --broker, not both")
    if broker is not None:
        status = fetch_broker_status(broker, args.crawl)
    elif args.master is None:
        raise UsageError(f"no master: give its HOST:PORT, or --broker URL (or ${BROKER_ENV})")
    else:
        key_file, folder_key, took = args.authkey_file, None, ""
        if _a_folder_for_an_address(args.master):
            folder = Path(args.master)
            args.master = _queue_of_folder(folder)
            # Its key as the master took it: given, else the variable, else the folder's.
            if key_file is None and (folder / KEY_FILE_NAME).is_file():
                if os.environ.get(ENV_VAR, "").strip():
                    took = (f"status took ${ENV_VAR}, not {folder / KEY_FILE_NAME}: unset it "
                            "for the folder's key")
                else:
                    key_file = folder_key = folder / KEY_FILE_NAME
                    took = (f"status took {folder_key}: for a master started with "
                            f"--authkey-file or {ENV_VAR}, give the same here")
        address = _address(args.master)  # a mistyped address before a missing key
        authkey = load_authkey(key_file, generate=False, empty_hint=MASTERS_KEY_HINT)
        try:
            status = fetch_status(address, authkey.key)
        except AuthenticationFailed as exc:
            if not took:
                raise
            raise AuthenticationFailed(f"{exc} ({took})") from exc
    write_out(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _queue_of_folder(folder: Path) -> str:
    """The HOST:PORT of the master crawling into ``folder`` on this host, as it noted it in
    the folder's lock; UsageError, saying how to ask, for any other folder."""
    from crawler.master.folderlock import BROKER_NOTE, noted_by_master

    noted = noted_by_master(folder)
    if noted is None:
        raise UsageError(f"{folder} is a folder no master is crawling into now: status asks "
                         "a running master (give its HOST:PORT, or its output folder)"
                         f"{_what_a_folder_holds(folder)}")
    if noted.startswith(BROKER_NOTE + " "):
        _, broker, crawl = [*noted.split(" "), "", ""][:3]
        raise UsageError(f"{folder} is the folder of a master of the crawl {crawl} on the "
                         f"broker at {broker}: status asks the broker: crawler status --broker "
                         f"{shell_word(broker)} --crawl {shell_word(crawl)}")
    if not noted:  # a master of an older version, or one starting
        raise UsageError(f"{folder} is a folder a master is crawling into now: status asks "
                         "that master, by the HOST:PORT it printed as 'queue on HOST:PORT' "
                         f"(crawler report {shell_word(folder)} shows what it has stored so "
                         "far)")
    return noted


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.ui.report import write_report

    path = write_report(args.output_dirs)
    write_out(f"wrote {path}")
    write_out(f"open {path.resolve().as_uri()} in a browser")
    return 0


def _completion(args: argparse.Namespace, settings: Settings) -> int:
    import shtab

    write_out(shtab.complete(build_parser(), shell=args.shell).rstrip("\n"))
    return 0
