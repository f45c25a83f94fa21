#!/usr/bin/env python3
"""Independent consumer for the end-to-end tests.

Reads every partition of the given topics from the beginning with kafka-python (a client that
shares no code with the replay's librdkafka), validates each payload against its topic's JSON
Schema from schemas/json/, and writes one JSON line per record to --out:
{"topic", "partition", "offset", "key", "timestamp", "timestamp_type", "value"}.
Stops when no record has arrived for --idle seconds. Prints a JSON summary on stdout.
"""
import argparse
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from kafka import KafkaConsumer, TopicPartition

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", action="append", required=True,
                    help="TOPIC=SCHEMA_FILE (file name under schemas/json/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--idle", type=float, default=2.0)
    args = ap.parse_args()

    validators = {}
    for spec in args.topic:
        topic, schema = spec.split("=", 1)
        validators[topic] = Draft202012Validator(json.loads((SCHEMAS / schema).read_text()))

    consumer = KafkaConsumer(bootstrap_servers=args.brokers, enable_auto_commit=False,
                             consumer_timeout_ms=int(args.idle * 1000),
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    parts = []
    for topic in validators:
        ids = None
        for _ in range(50):
            ids = consumer.partitions_for_topic(topic)
            if ids:
                break
            consumer.poll(timeout_ms=100)
        if not ids:
            print(json.dumps({"error": f"topic {topic} not found"}))
            return 2
        parts += [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)

    records = invalid = 0
    first_invalid = []
    with open(args.out, "w", encoding="utf-8") as out:
        for m in consumer:
            records += 1
            try:
                value = json.loads(m.value)
                errors = [e.message for e in validators[m.topic].iter_errors(value)]
            except ValueError as e:
                value, errors = None, [f"not JSON: {e}"]
            if errors:
                invalid += 1
                if len(first_invalid) < 5:
                    first_invalid.append({"topic": m.topic, "offset": m.offset, "errors": errors[:3]})
            out.write(json.dumps({
                "topic": m.topic, "partition": m.partition, "offset": m.offset,
                "key": m.key.decode() if m.key is not None else None,
                "timestamp": m.timestamp, "timestamp_type": m.timestamp_type, "value": value,
            }) + "\n")
    consumer.close()
    print(json.dumps({"records": records, "invalid": invalid, "first_invalid": first_invalid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
