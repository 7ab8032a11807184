"""The master: crawls pages in scope, finds images, puts them on the board, records results."""
