"""The names of the files a crawl writes in its output folder, for whoever reads them."""

RESULTS_NAME = "results.log"  # one URL--->success or URL--->failure: reason line per image
MANIFEST_NAME = "manifest.jsonl"  # one JSON object per image URL with a final outcome
PAGES_NAME = "pages.jsonl"  # the pages that could not be crawled, one JSON object each
SUMMARY_NAME = "summary.json"  # the counts at the end of a run (crawler master --json)
SUMMARY_PARTIAL_NAME = SUMMARY_NAME + ".partial"  # summary.json written anew, then renamed
REPORT_NAME = "index.html"  # the gallery crawler report writes
JOURNAL_NAME = "crawl.sqlite"  # the embedded master's journal (SQLite)
BROKER_MARK = "broker-crawl.json"  # names the broker crawl whose results a folder holds
# Left in a demo's folder, naming its crawl's seed: a demo clears the folder only when
# its journal's seed is that one. Another crawl kept in OUT/demo (its journal, results
# and images) was erased without a word; one crawled there since (--fresh) has its own.
DEMO_MARK = ".crawler-demo"
PAGE_COOKIES_NAME = "page-cookies.txt"  # the cookies the crawl's pages set (mode 0600)
LOCK_NAME = "crawl.lock"  # held by the master crawling into the folder, while it runs

# summary.json's images_left (images met past --max-images) is exact up to this many
# URLs, which the master keeps to count them (some 10 MB); past it, "at least".
IMAGES_LEFT_KEPT = 100_000


def images_left_shown(images_left: int, *, separator: str = "") -> str:
    """summary.json's images_left as people read it: "at least N" once it reached
    IMAGES_LEFT_KEPT, where the count stops; ``separator`` groups the thousands."""
    number = f"{images_left:,}".replace(",", separator)
    return f"at least {number}" if images_left >= IMAGES_LEFT_KEPT else number
