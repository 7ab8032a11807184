"""What travels between the crawler's processes: URLs, image types, attempts and outcomes."""
