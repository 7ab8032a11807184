"""A hostile site: every URL has an expected result, and nothing escapes the output folder."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

import pytest

from crawler.demo.site import png
from crawler.fetch.easy import Reply
from crawler.fetch.guard import AddressPolicy, kind_of
from crawler.fetch.options import RequestOptions
from crawler.master.pages import wants_html
from crawler.model.urls import normalize
from crawler.parse.extract import MAX_URL_LENGTH

from . import pageclients
from .accepting import accept_each
from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    command_lines,
    endless_nothing,
    finish,
    gzipped_twice,
    manifest_lines,
    run_crawler,
    start_crawler,
    wait_for_queue_address,
)

PNG = png(16, 12, 5)
GIF = (SITE / "icons" / "star.gif").read_bytes()
HTML = b"<!DOCTYPE html><html><body>Sorry, not found</body></html>"
SETTINGS = """
[download]
max_bytes = 1000000
deadline = 2.0
min_width = 4
max_attempts = 1
"""


def body(content: bytes, kind: str) -> Callable[[FixtureHandler], None]:
    return lambda handler: handler.send_body(200, content, kind)


def redirect(target: str) -> Callable[[FixtureHandler], None]:
    return lambda handler: handler.send_body(302, b"", "text/plain", {"Location": target})


def declared_huge(handler: FixtureHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(60_000_000))
    handler.end_headers()
    handler.wfile.write(PNG)


def streamed_huge(handler: FixtureHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        handler.wfile.write(PNG)
        for _ in range(40):  # 2.6 MB with no Content-Length
            handler.wfile.write(b"\0" * 65536)
    except OSError:
        pass
    handler.close_connection = True


BOMB = gzip.compress(PNG + b"\0" * 100_000_000, compresslevel=9)


def decompression_bomb(handler: FixtureHandler) -> None:
    handler.send_body(200, BOMB, "image/png", {"Content-Encoding": "gzip"})


def trickle(handler: FixtureHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(PNG) + 100))
    handler.end_headers()
    try:
        handler.wfile.write(PNG[:100])
        for byte in PNG[100:] + b"\0" * 100:  # one byte every 0.2 s: never a read timeout
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass


LONG_NAME = "n" * 300 + ".png"

# path -> (route, expected status, expected reason or a predicate on the stored path)
CASES: dict[str, tuple[Callable[[FixtureHandler], None], str, str]] = {
    "/ok.png": (body(PNG, "image/png"), "success", ""),
    "/error-page.png": (body(HTML, "text/html"), "failure", "not an image"),
    "/lying-type.jpg": (body(HTML, "image/jpeg"), "failure", "not an image"),
    "/wrong-type.dat": (body(PNG, "text/plain"), "success", ""),
    "/noext": (body(GIF, "application/octet-stream"), "success", ""),
    "/declared-huge.png": (declared_huge, "failure", "too large: 60000000 bytes > 1000000"),
    "/streamed-huge.png": (streamed_huge, "failure", "too large: over 1000000 bytes"),
    "/bomb.png": (decompression_bomb, "failure", "too large: over 1000000 bytes"),
    "/trickle.png": (trickle, "failure", "too slow: not finished within 2 s"),
    "/tiny.png": (body(png(2, 2, 3), "image/png"), "failure", "too small: 2x2"),
    "/%2e%2e/%2e%2e/escape.png": (body(PNG, "image/png"), "success", ""),
    "/dots/..%2F..%2Fescape2.png": (body(PNG, "image/png"), "success", ""),
    "/back%5Cslash.png": (body(PNG, "image/png"), "success", ""),
    "/ctl%01%7F.png": (body(PNG, "image/png"), "success", ""),
    "/con.png": (body(PNG, "image/png"), "success", ""),
    "/" + LONG_NAME: (body(PNG, "image/png"), "success", ""),
    "/a": (body(PNG, "image/png"), "success", ""),
    "/a/b.png": (body(PNG, "image/png"), "success", ""),
    "/q.png": (body(PNG, "image/png"), "success", ""),
    "/to-private.png": (redirect("http://10.255.255.1/x.png"), "failure",
                        "redirected to http://10.255.255.1/x.png: refused to connect to "
                        "10.255.255.1 (10.255.255.1): private address"),
    "/to-metadata.png": (redirect("http://169.254.169.254/latest/meta-data/"), "failure",
                         "redirected to http://169.254.169.254/latest/meta-data/: refused "
                         "to connect to 169.254.169.254 (169.254.169.254): metadata"),
}
EXTRA_IMAGES = {  # referenced by the page, served by routes above
    "/q.png?x=1": "success", "/q.png?x=2": "success",
    "http://10.0.0.1/direct.png": "failure",
}


@pytest.fixture
def hostile(make_server: Callable[[], FixtureServer]) -> FixtureServer:
    server = make_server()
    tags = [f'<img src="{path}">' for path in CASES] + [
        f'<img src="{path}">' for path in EXTRA_IMAGES]
    page = ("<html><body>" + "".join(tags) + "</body></html>").encode()
    server.routes["/"] = body(page, "text/html")
    for path, (route, _, _) in CASES.items():
        server.routes[path] = route
    # %2e is an unreserved ".", so the URL normalises to /escape.png: that is what is fetched.
    server.routes["/escape.png"] = body(PNG, "image/png")
    return server


@pytest.mark.loopback_only
def test_hostile_site_every_url_has_its_expected_result(hostile: FixtureServer, tmp_path: Path,
                                                        authkey: str) -> None:
    (tmp_path / "settings.toml").write_text(SETTINGS)
    out = tmp_path / "out"
    result = run_crawler("master", hostile.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                         "--local-workers", "2", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    base = hostile.url
    expected = {normalize(base + path): (status, reason)
                for path, (_, status, reason) in CASES.items()}
    expected.update({normalize(urljoin(base, path)): (status, "")
                     for path, status in EXTRA_IMAGES.items()})
    assert set(entries) == set(expected)
    for url, (status, reason) in expected.items():
        assert entries[url]["status"] == status, (url, entries[url])
        assert entries[url]["reason"].startswith(reason), (url, entries[url]["reason"])
    assert "private address" in entries["http://10.0.0.1/direct.png"]["reason"]

    root = out.resolve()
    stored = {}
    for entry in entries.values():
        if entry["status"] != "success":
            continue
        path = (out / entry["path"]).resolve()
        assert root in path.parents, f"{entry['url']} escaped to {path}"
        assert all(len(part.encode()) <= 255 for part in path.parts)
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        stored[entry["url"]] = path
    # The extension comes from the real type; a name the URL does not spell out exactly
    # carries "~" and the URL's hash, so no other URL can want it.
    assert re.fullmatch(r"noext~[0-9a-f]{10}\.gif", stored[base + "/noext"].name)
    assert re.fullmatch(r"wrong-type\.dat~[0-9a-f]{10}\.png", stored[base + "/wrong-type.dat"].name)
    assert entries[base + "/wrong-type.dat"]["content_type"] == "image/png"  # not text/plain
    assert re.fullmatch(r"_con~[0-9a-f]{10}\.png", stored[base + "/con.png"].name)
    assert stored[base + "/q.png?x=1"] != stored[base + "/q.png?x=2"]
    assert stored[base + "/a"].is_file() and stored[base + "/a/b.png"].is_file()
    everything = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in everything if ".partial" in p.parts], "partial files were left"
    images = {p.resolve() for p in everything if p.suffix in (".png", ".gif")}
    assert images == set(stored.values()), "nothing stored that the manifest does not name"


@pytest.mark.loopback_only
def test_a_page_redirecting_to_a_private_address_is_not_fetched(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    server.routes["/"] = body(b'<a href="/go">go</a><img src="/ok.png">', "text/html")
    server.routes["/go"] = redirect("http://192.168.255.254/admin")
    server.routes["/ok.png"] = body(PNG, "image/png")
    result = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", "--scope", "any",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "refused to connect to 192.168.255.254" in result.stderr
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]
    [page] = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").open()]
    assert page["reason"].startswith(  # said as a redirect's refusal, as an image's is
        "redirected to http://192.168.255.254/admin: refused to connect to 192.168.255.254 "
        "(192.168.255.254): private address not allowed"), page


def test_explicit_networks_replace_the_seed_default(site: FixtureServer, tmp_path: Path,
                                                    authkey: str) -> None:
    (tmp_path / "settings.toml").write_text('[security]\nallow_networks = ["10.0.0.0/8"]\n')
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 5, result.stderr  # the seed was refused: nothing was crawled
    assert "loopback address not allowed" in result.stderr
    assert site.paths() == []


def test_authkey_stays_out_of_the_process_list(site: FixtureServer, tmp_path: Path,
                                               authkey: str) -> None:
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--local-workers", "2", "--host-delay", "0.3",
                           cwd=tmp_path)
    try:
        wait_for_queue_address(master)
        time.sleep(1.0)  # the local workers are up
        lines = command_lines()
        ours = [c for c in lines if b"crawler" in c]
        assert sum(b"worker" in c for c in ours) >= 2
        assert not [c for c in lines if authkey.encode() in c]
        err = finish(master, 60)
    finally:
        if master.poll() is None:
            master.kill()
    assert authkey not in err
    assert authkey not in "".join(p.read_text() for p in (tmp_path / "out").glob("*.log"))


def test_a_key_file_readable_by_others_gets_a_warning(tmp_path: Path) -> None:
    key_file = tmp_path / "authkey"
    key_file.write_text("k" * 32)
    key_file.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IROTH)
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    result = run_crawler("worker", "127.0.0.1:1", "--authkey-file", str(key_file),
                         "--connect-wait", "0", cwd=tmp_path, env=env)
    assert f"the authkey file {key_file} can be read by other users" in result.stderr
    assert "k" * 32 not in result.stderr


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("100.64.0.1", "private"),
    ("fd00::1", "private"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"), ("8.8.8.8", "public"), ("::ffff:127.0.0.1", "loopback"),
    # 6to4 and NAT64 lead to the IPv4 address they carry: judged by it.
    ("2002:a9fe:a9fe::1", "metadata"), ("2002:7f00:1::1", "loopback"),
    ("2002:a00:1::", "private"), ("2002:808:808::1", "public"),
    ("64:ff9b::a9fe:a9fe", "metadata"), ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::808:808", "public"),
])
def test_address_kinds(address: str, kind: str) -> None:
    assert kind_of(ipaddress.ip_address(address)) == kind


def test_policy_from_seeds_allows_only_the_seeds_kinds() -> None:
    loopback = AddressPolicy.from_seeds(["http://127.0.0.1:8000/"])
    assert loopback.refusal(ipaddress.ip_address("127.0.0.2")) is None
    assert loopback.refusal(ipaddress.ip_address("10.0.0.1")) == "private"
    assert loopback.refusal(ipaddress.ip_address("169.254.169.254")) == "metadata"
    explicit = AddressPolicy.from_seeds(["http://127.0.0.1/"], ["169.254.169.254/32"])
    assert explicit.refusal(ipaddress.ip_address("169.254.169.254")) is None
    # An IPv6 address that leads to a listed IPv4 one is let through, as judged by it.
    assert explicit.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) is None
    assert explicit.refusal(ipaddress.ip_address("2002:a9fe:a9fe::1")) is None
    assert explicit.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9ff")) == "link-local"
    assert explicit.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert AddressPolicy.from_wire(loopback.to_wire()) == loopback
    # A seed's name written fully qualified is the same host: libcurl connects to it.
    qualified = AddressPolicy.from_seeds(["http://localhost.:8000/"])
    assert qualified.refusal(ipaddress.ip_address("127.0.0.1")) is None
    # Any *.localhost is loopback, as libcurl answers it without asking the resolver
    # (which knows "localhost" alone): such a seed allows loopback addresses too.
    for seed in ("http://app.localhost:8000/", "http://App.Localhost.:8000/",
                 "http://xn--bcher-kva.localhost/"):
        named = AddressPolicy.from_seeds([seed])
        assert named.refusal(ipaddress.ip_address("127.0.0.1")) is None, seed
        assert named.refusal(ipaddress.ip_address("::1")) is None, seed
        assert named.refusal(ipaddress.ip_address("10.0.0.1")) == "private", seed


@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_seed_on_a_localhost_subdomain_is_crawled(site: FixtureServer, kind: str) -> None:
    url = f"http://app.localhost:{site.server_address[1]}/"
    reply = pageclients.get(kind, AddressPolicy.from_seeds([url]), RequestOptions(), url,
                            max_bytes=100_000, timeout=5)
    assert reply.blocked is None and reply.status == 200, reply


@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_the_check_is_made_after_name_resolution(site: FixtureServer, kind: str) -> None:
    port = site.server_address[1]
    url = f"http://localhost:{port}/"

    def get(policy: AddressPolicy) -> Reply:
        return pageclients.get(kind, policy, RequestOptions(), url, max_bytes=100_000, timeout=5)

    refused = get(AddressPolicy())  # public addresses only: localhost resolves to loopback
    assert refused.blocked is not None, refused
    assert "refused to connect to localhost" in str(refused.blocked)
    assert site.paths() == []
    assert get(AddressPolicy.from_seeds([site.url])).status == 200


@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_compressed_page_cut_short_is_a_failure_to_try_again(
        make_server: Callable[[], FixtureServer], kind: str) -> None:
    """libcurl handed on what it had of a gzip stream framed right but cut short: the page
    was parsed as whole, and the links and images of its missing part were lost."""
    server = make_server()
    page = b"<html>" + b"".join(b'<a href="/p%d">p</a>' % n for n in range(500)) + b"</html>"
    half_page = gzip.compress(page)[:len(gzip.compress(page)) // 2]
    server.routes["/half"] = lambda h: h.send_body(200, half_page, "text/html",
                                                   {"Content-Encoding": "gzip"})
    server.routes["/whole"] = lambda h: h.send_body(200, gzip.compress(page), "text/html",
                                                    {"Content-Encoding": "gzip"})
    server.routes["/lzw"] = lambda h: h.send_body(200, page, "text/html",
                                                  {"Content-Encoding": "compress"})
    loopback = AddressPolicy.from_seeds([server.url])

    def get(path: str, max_bytes: int = 100_000) -> Reply:
        return pageclients.get(kind, loopback, RequestOptions(), server.url + path,
                               max_bytes=max_bytes, timeout=5)

    half = get("/half")
    assert (half.ok, half.failure, half.transient, half.body) == (
        False, "bad response: compressed body cut short", True, b""), half
    whole = get("/whole")
    assert whole.ok and whole.body == page and not whole.truncated, whole
    capped = get("/whole", max_bytes=1000)  # cut by us at the cap: what was read stands
    assert capped.ok and capped.truncated and capped.body == page[:1000], capped
    unknown = get("/lzw")
    assert (unknown.ok, unknown.failure, unknown.transient) == (
        False, "bad response: unsupported content encoding 'compress'", False), unknown


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_body_exactly_as_long_as_the_cap_is_whole(
        make_server: Callable[[], FixtureServer], kind: str, gzipped: bool) -> None:
    """A page of exactly crawl.max_page_bytes was warned of as longer than the cap (and a
    robots.txt of exactly its cap lost its last line): only a byte past the cap shows that
    a body was cut."""
    server = make_server()
    page = b"<html>" + b"x" * 988 + b"</html>"
    assert len(page) == 1001
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    sent = gzip.compress(page) if gzipped else page
    server.routes["/page"] = lambda h: h.send_body(200, sent, "text/html", headers)
    loopback = AddressPolicy.from_seeds([server.url])

    def get(max_bytes: int) -> Reply:
        return pageclients.get(kind, loopback, RequestOptions(), server.url + "/page",
                               max_bytes=max_bytes, timeout=5)

    exact = get(1001)
    assert exact.ok and exact.body == page and not exact.truncated, exact
    over = get(1000)
    assert over.ok and over.body == page[:1000] and over.truncated, over


def test_a_page_cut_at_max_page_bytes_is_said_in_the_summary(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """The images past the cut were lost with one warning line as the page was read:
    the summary said a completed crawl, summary.json nothing, and only the settings
    file could raise the bound."""
    server = make_server()
    images = [f"/{n}.png" for n in range(4)]
    filler = "<p>" + "x" * 3000 + "</p>"
    page = (f'<html><body><img src="{images[0]}">{filler}' + "".join(
        f'<img src="{path}">' for path in images[1:]) + "</body></html>").encode()
    server.routes["/"] = body(page, "text/html")
    for n, path in enumerate(images):
        server.routes[path] = body(png(4, 4, n), "image/png")

    def crawl(out: str, *flags: str) -> subprocess.CompletedProcess[str]:
        done = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / out), "--local-workers", "1", *flags, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    cut = crawl("cut", "--max-page-bytes", "2k")
    assert len(manifest_lines(tmp_path / "cut")) == 1
    assert ("  cut short       1 page longer than --max-page-bytes (crawl.max_page_bytes), "
            "read up to there: their images and links past it are left out; with --fresh "
            "and a larger one, they are read whole") in cut.stderr
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["pages_cut"] == 1
    whole = crawl("whole")  # the default, 10 MB
    assert len(manifest_lines(tmp_path / "whole")) == 4
    assert "cut short" not in whole.stderr
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["pages_cut"] == 0


@pytest.mark.parametrize("encoding", ["deflate", "br"])
@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_compressed_page_that_decodes_to_nothing_is_cut_at_twice_max_bytes(
        make_server: Callable[[], FixtureServer], kind: str, encoding: str) -> None:
    """Empty blocks one after another decode to nothing: crawl.max_page_bytes never came,
    and the page was read at full speed until its deadline."""
    server = make_server()
    server.routes["/empty"] = endless_nothing(encoding, "text/html")
    started = time.monotonic()
    reply = pageclients.get(kind, AddressPolicy.from_seeds([server.url]), RequestOptions(),
                            server.url + "/empty", max_bytes=100_000, timeout=4)
    assert (reply.ok, reply.failure, reply.transient, reply.body) == (
        False, "too large: over 200000 bytes compressed (twice the size limit)", False, b"")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_only_a_success_body_is_decoded_and_repeated_encodings_are_one_list(
        make_server: Callable[[], FixtureServer], kind: str) -> None:
    """A robots.txt 404 (or 301) whose unread body was gzip cut short failed as a broken
    response, and the whole site was held disallowed; "Content-Encoding: gzip" twice
    (gzip over gzip) was decoded once, and robots.txt rules read from gzip bytes."""
    server = make_server()
    rules = b"User-agent: *\nDisallow: /private/\n"

    server.routes["/gone"] = lambda h: h.send_body(404, gzip.compress(rules)[:20], "text/plain",
                                                   {"Content-Encoding": "gzip"})
    server.routes["/twice"] = gzipped_twice(rules, "text/plain")
    server.routes["/none"] = lambda h: h.send_body(200, rules, "text/plain",
                                                   {"Content-Encoding": "none"})
    loopback = AddressPolicy.from_seeds([server.url])
    replies = {path: pageclients.get(kind, loopback, RequestOptions(), server.url + path,
                                     max_bytes=100_000, timeout=5)
               for path in ("/gone", "/twice", "/none")}
    assert replies["/gone"].ok and replies["/gone"].status == 404, replies["/gone"]
    for path in ("/twice", "/none"):
        assert replies[path].ok and replies[path].body == rules, replies[path]


@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_switching_protocols_answer_not_asked_for_is_the_pages_answer(kind: str) -> None:
    """libcurl takes a 101 it did not ask for as the final answer, as the workers' engine
    does: taken for an interim one, a page whose server then held the connection open
    waited out its deadline, "too slow" and tried again, where an image said "HTTP 101"."""
    def upgrade_then_hold(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n"
                             b"Content-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>")
                conn.recv(1)  # held open until the client leaves (or 5 s pass)

    port, done = accept_each(upgrade_then_hold)
    try:
        reply = pageclients.get(kind, AddressPolicy.from_seeds(["http://127.0.0.1/"]),
                                RequestOptions(), f"http://127.0.0.1:{port}/", timeout=1.5,
                                wants=wants_html)
    finally:
        done.set()
    assert (reply.ok, reply.status, reply.refused, reply.body) == (True, 101, True, b""), reply


def test_a_compressed_image_cut_short_is_retried_and_never_stored(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    server.routes["/"] = body(b'<img src="/half.png"><img src="/ok.png">', "text/html")
    server.routes["/half.png"] = lambda h: h.send_body(
        200, gzip.compress(PNG)[:len(PNG) // 3], "image/png", {"Content-Encoding": "gzip"})
    server.routes["/ok.png"] = lambda h: h.send_body(200, gzip.compress(PNG), "image/png",
                                                     {"Content-Encoding": "gzip"})
    out = tmp_path / "out"
    result = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(out), "--local-workers", "1", "--max-attempts", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outcomes = {e["url"].rsplit("/", 1)[1]: e for e in manifest_lines(out)}
    assert outcomes["ok.png"]["status"] == "success"
    assert outcomes["half.png"]["status"] == "failure"
    assert outcomes["half.png"]["reason"] == "bad response: compressed body cut short"
    assert server.paths().count("/half.png") == 2  # transient: tried again, as many times
    assert [p.read_bytes() for p in out.rglob("*.png")] == [PNG]  # as allowed


def test_broken_redirects_and_robots_bodies_do_not_end_the_crawl(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    server.routes["/"] = body(b'<a href="/bad">x</a><img src="/ok.png">', "text/html")
    server.routes["/bad"] = redirect("http://[oops/")
    server.routes["/ok.png"] = body(PNG, "image/png")
    result = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bad redirect" in result.stderr and "Traceback" not in result.stderr
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]

    def broken_robots(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"User-agent: *\n")  # and the connection closes short
        handler.close_connection = True

    server.routes["/robots.txt"] = broken_robots
    result = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "again"), "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 5, result.stderr  # the seed's site was not crawled
    assert "Traceback" not in result.stderr
    assert "robots.txt of" in result.stderr and "broke off" in result.stderr


def test_a_page_whose_references_are_too_long_to_fetch_says_so(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A 100 KB link or image address is left out, and the crawl says which page had
    how many, rather than dropping them without a word."""
    server = make_server()
    huge = "h" * 100_000
    server.routes["/"] = body(f'<a href="/{huge}">x</a><img src="/{huge}.png">'
                              '<img src="/ok.png">'.encode(), "text/html")
    result = run_crawler("master", server.url + "/", "--dry-run", "--out",
                         str(tmp_path / "out"), cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [server.url + "/ok.png"]
    assert (f"page {server.url}/: 2 links or images left out: their addresses are longer"
            f" than {MAX_URL_LENGTH} characters") in result.stderr
    assert huge not in result.stderr
