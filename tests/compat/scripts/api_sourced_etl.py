# Source: https://docs.prefect.io/v3/examples/run-api-sourced-etl (PrefectHQ/prefect examples/run_api_sourced_etl.py)
# Adapted: httpx is replaced by a local stand-in serving 30 made-up articles per page (no
# network); the page's narrative comments are left out. The code is as it is.
# Expect exit: 0
# Expect output:
#   Fetching page 1 …
#   Fetching page 3 …
#   Saved 90 rows ➜ devto_articles.csv
#   Preview:

from __future__ import annotations

from pathlib import Path
from typing import Any


class httpx:  # local stand-in for the network: dev.to's /articles, made up
    class Response:
        def __init__(self, payload):
            self._payload = payload

        def raise_for_status(self):
            pass

        def json(self):
            return self._payload

    @staticmethod
    def get(url, params, timeout):
        page, per_page = params["page"], params["per_page"]
        return httpx.Response([
            {
                "id": page * 1000 + i,
                "title": f"Article {page}-{i}",
                "published_at": "2024-01-04T10:00:00Z",
                "url": f"https://dev.to/a/{page}-{i}",
                "comments_count": i,
                "positive_reactions_count": 2 * i,
                "tag_list": ["python"],
                "user": {"username": f"writer{i % 7}"},
            }
            for i in range(per_page)
        ])


import pandas as pd

from prefect import flow, task


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def fetch_page(page: int, api_base: str, per_page: int) -> list[dict[str, Any]]:
    """Return a list of article dicts for a given page number."""
    url = f"{api_base}/articles"
    params = {"page": page, "per_page": per_page}
    print(f"Fetching page {page} …")
    response = httpx.get(url, params=params, timeout=30)
    response.raise_for_status()
    return response.json()


@task
def to_dataframe(raw_articles: list[list[dict[str, Any]]]) -> pd.DataFrame:
    """Flatten & normalise JSON into a tidy DataFrame."""
    # Combine pages, then select fields we care about
    records = [article for page in raw_articles for article in page]
    df = pd.json_normalize(records)[
        [
            "id",
            "title",
            "published_at",
            "url",
            "comments_count",
            "positive_reactions_count",
            "tag_list",
            "user.username",
        ]
    ]
    return df


@task
def save_csv(df: pd.DataFrame, path: Path) -> None:
    """Persist DataFrame to disk then log a preview."""
    df.to_csv(path, index=False)
    print(f"Saved {len(df)} rows ➜ {path}\n\nPreview:\n{df.head()}\n")


@flow(name="devto_etl", log_prints=True)
def etl(api_base: str, pages: int, per_page: int, output_file: Path) -> None:
    """Run the end-to-end ETL for *pages* of articles."""
    # Extract – simple loop for clarity
    raw_pages: list[list[dict[str, Any]]] = []
    for page_number in range(1, pages + 1):
        raw_pages.append(fetch_page(page_number, api_base, per_page))

    # Transform
    df = to_dataframe(raw_pages)

    # Load
    save_csv(df, output_file)


if __name__ == "__main__":
    # Configuration – tweak to taste
    api_base = "https://dev.to/api"
    pages = 3  # Number of pages to fetch
    per_page = 30  # Articles per page (max 30 per API docs)
    output_file = Path("devto_articles.csv")

    etl(api_base=api_base, pages=pages, per_page=per_page, output_file=output_file)
