"""The worker: leases image URLs, downloads and checks them, stores them, reports each one."""
