"""Building a dataset from the web: keyword and URL-list crawls, then cleaning with review.

`ewaste data crawl QUERIES.yaml --out DIR` fills `DIR/CLASS/NNNNNN.jpg` and `DIR/manifest.csv`
politely (robots.txt, a delay per host, bounded retries); `ewaste data clean DIR` flags
duplicates, broken, tiny and off-topic files in `DIR/review.html` and, with `--apply`, moves them
aside (never deletes).
"""
