"""The operator's views: the live progress display, the HTML report and `crawler status`."""
