"""The task board: image URLs waiting, leased and settled, and the queue server that shares it."""
