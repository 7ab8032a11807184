"""The demo site: pictures worth a look, in several formats and shapes, always the same."""

from __future__ import annotations

from collections import Counter

from crawler.demo.site import SHAPES, build_site, picture
from crawler.model.imagetype import dimensions, sniff


def test_images_are_real_pictures_of_several_formats_and_shapes() -> None:
    site = build_site(broken_links=True)
    kinds: Counter[str] = Counter()
    shapes = set()
    for path in site.images:
        content_type, body = site.files[path]
        kind = sniff(body)
        assert kind is not None and kind.mime == content_type, path
        assert path.endswith("." + kind.extension), path
        size = dimensions(body, kind)
        assert size in SHAPES, (path, size)  # a few hundred pixels, never a speck
        kinds[kind.name] += 1
        shapes.add(size)
    assert set(kinds) == {"png", "jpeg", "gif", "svg"}
    assert shapes == set(SHAPES)
    # Every picture is its own.
    bodies = [site.files[path][1] for path in site.images]
    assert len(set(bodies)) == len(bodies)


def test_the_same_number_is_the_same_picture() -> None:
    assert picture(5) == picture(5)
    assert picture(5) != picture(6)


def test_broken_links_point_at_what_is_not_there() -> None:
    site = build_site(broken_links=True)
    home = site.files["/"][1].decode()
    assert 'href="/page/gone.html"' in home and 'src="/images/gone.png"' in home
    assert "/page/gone.html" not in site.files and "/images/gone.png" not in site.files
    assert build_site().images == site.images
