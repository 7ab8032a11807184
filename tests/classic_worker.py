"""A worker written exactly like the classic tutorial, to prove our master serves it unchanged.

Usage: python classic_worker.py HOST PORT  (the authkey comes from CRAWLER_AUTHKEY)
"""

import os
import queue
import sys
import urllib.request
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("get_task_queue")
QueueManager.register("get_result_queue")

server_addr, port = sys.argv[1], int(sys.argv[2])
m = QueueManager(address=(server_addr, port), authkey=os.environ["CRAWLER_AUTHKEY"].encode())
m.connect()
task = m.get_task_queue()
result = m.get_result_queue()
while True:
    try:
        url = task.get(timeout=3)
    except queue.Empty:
        break
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        result.put("%s--->success" % url)
    except Exception as e:
        result.put("%s--->failure: %s" % (url, e))
print("classic worker done")
