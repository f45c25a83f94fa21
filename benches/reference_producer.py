#!/usr/bin/env python3
"""Reference producer for the replay benchmark: librdkafka (confluent-kafka) sending exactly the
records `streamflix-replay run --sink stdout` would send (same topics, partitions, keys,
timestamps, payload bytes), with the replay's producer settings. Prints JSON with the send rate.
All records are loaded and encoded before the clock starts, so only producing is timed.
"""
import argparse
import json
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--brokers", required=True)
ap.add_argument("--records", required=True, help="JSON lines from --sink stdout")
ap.add_argument("--prefix", default="reference")
ap.add_argument("--partitions", type=int, default=3)
args = ap.parse_args()

records = []
events = 0
with open(args.records, encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        topic = f"{args.prefix}.{r['topic']}"
        key = None if r["key"] is None else str(r["key"]).encode()
        value = json.dumps(r["record"], separators=(",", ":")).encode()
        events += r["record"]["type"] != "heartbeat"
        records.append((topic, r["partition"], key, value, r["ts"] * 1000))

admin = AdminClient({"bootstrap.servers": args.brokers})
topics = [f"{args.prefix}.ratings", f"{args.prefix}.tags"]
for fut in admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics]).values():
    fut.result()
time.sleep(1)

p = Producer({
    "bootstrap.servers": args.brokers, "enable.idempotence": True, "linger.ms": 20,
    "batch.num.messages": 10000, "batch.size": 1000000,
    "queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 1048576,
})
failed = 0


def on_delivery(err, _msg):
    global failed
    if err is not None:
        failed += 1


start = time.perf_counter()
for topic, partition, key, value, ts in records:
    while True:
        try:
            p.produce(topic, value=value, key=key, partition=partition, timestamp=ts, on_delivery=on_delivery)
            break
        except BufferError:
            p.poll(0.001)
    p.poll(0)
p.flush(120)
seconds = time.perf_counter() - start
print(json.dumps({"records": len(records), "events": events, "failed": failed, "seconds": seconds,
                  "events_per_second": events / seconds}))
