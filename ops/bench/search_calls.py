"""Calls of search_record_events as the api's batch writers make them, for
ops/bench/search-instructions: `--calls` calls of `--events` events each, 80% of them by
one of 50,000 users and 20% by one of 12,000 guests, queries Zipf-like over 20,000 ranks
(as ops/bench/search draws them),
fresh search_ids, from a fixed seed. Plain SQL for psql, or with `--single-user` each
statement followed by an empty line, as `postgres --single -j` reads them."""
import argparse
import math
import random
import uuid

parser = argparse.ArgumentParser()
parser.add_argument("--calls", type=int, default=300)
parser.add_argument("--events", type=int, default=10)
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--single-user", action="store_true")
args = parser.parse_args()
rng = random.Random(args.seed)
end = "\n\n" if args.single_user else "\n"


def rank():
    # the rank distribution of ops/bench/search's generated day (search-load): log-uniform
    # over 1..20,000, so a tenth of the events ask one of the ten most popular queries
    return int(math.exp(rng.random() * math.log(20000)))


def array(items):
    return "'{" + ",".join(items) + "}'"


print("prepare record(uuid[], int8[], text[], text[], text[]) as "
      "select * from search_record_events(3, 10, $1, array_fill(now(), array[cardinality($1)]), "
      "$2, $3, $4, $5, array_fill(5, array[cardinality($1)]), "
      "array_fill('{\"city\": \"nyc\"}'::jsonb, array[cardinality($1)]), "
      "array_fill('[{\"instructor_id\": 1, \"position\": 0}]'::jsonb, array[cardinality($1)]), "
      "array_fill(sha256('ip'::bytea), array[cardinality($1)]), "
      "array_fill('desktop'::text, array[cardinality($1)]));", end=end)
for _ in range(args.calls):
    ids, users, guests, queries, normalized = [], [], [], [], []
    for _ in range(args.events):
        ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        if rng.random() < 0.8:
            users.append(str(rng.randint(1, 50000)))
            guests.append("NULL")
        else:
            users.append("NULL")
            guests.append('"g%d"' % rng.randint(1, 12000))
        q = rank()
        queries.append('"Piano Lessons %d"' % q)
        normalized.append('"piano lessons %d"' % q)
    print("execute record(%s, %s, %s, %s, %s);" % tuple(
        array(x) for x in (ids, users, guests, queries, normalized)), end=end)
