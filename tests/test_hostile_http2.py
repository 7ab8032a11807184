"""Odd and hostile HTTP/2 servers (scripted with the ``h2`` package): images and pages.

A stream reset, one that stalls, a GOAWAY with images in flight, a head of endless
CONTINUATION frames, a body shorter than its Content-Length: each is one image's
(or page's) failure with a reason a user understands, within its deadlines, and
the other streams of the connection finish.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("h2")

from crawler.config import Settings
from crawler.demo.site import png
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.engine import H2_ENDED_SHORT
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.model.outcome import FailureKind

from . import pageclients
from .h2server import H2Server, Stream
from .test_curl import Engine
from .tls import CertAuthority, make_ca, server_context

PNG = png(40, 30, 7)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def trusting(ca: CertAuthority) -> RequestOptions:
    return RequestOptions.from_settings(Settings().with_values(
        {"http.ca_bundle": str(ca.ca_cert)}))


def image(stream: Stream, body: bytes = PNG, *, length: int | None = None) -> None:
    """A PNG answer; ``length``: the Content-Length said, if not the body's."""
    stream.head(200, (("content-type", "image/png"),
                      ("content-length", str(len(body) if length is None else length))))
    stream.body(body)


def test_a_stream_that_ends_short_of_its_content_length_is_a_body_cut_short(
        ca: CertAuthority, tmp_path: Path) -> None:
    """END_STREAM 100 bytes before the Content-Length: nghttp2's "received invalid frame:
    FRAME[DATA, len=N, eos=1, padlen=0], error -532: Violation in HTTP messaging rule"
    was the reason; it is the HTTP/1.1 answer cut short, and says so."""
    def short(stream: Stream) -> None:
        image(stream, length=len(PNG) + 100)

    with H2Server(server_context(ca), {"/short.png": short}, default=image) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca))
        try:
            got = engine.fetch([server.base + "/short.png", server.base + "/fine.png"])
        finally:
            engine.close()
        replies = [pageclients.get(kind, LOOPBACK, trusting(ca), server.base + "/short.png",
                                   ca_file=default_ca_file()) for kind in pageclients.KINDS]
    cut, fine = got[server.base + "/short.png"], got[server.base + "/fine.png"]
    assert cut is not None and (cut.kind, cut.reason, cut.transient) == (
        FailureKind.CONNECTION, H2_ENDED_SHORT, True), cut
    assert fine is not None and fine.ok, fine
    for reply in replies:
        assert (reply.kind, reply.failure, reply.transient) == (
            FailureKind.CONNECTION, H2_ENDED_SHORT, True), reply
