"""moto's server, with the changes the relay365 tests and benches need.

- Answers go out with TCP_NODELAY: werkzeug writes headers and body in two
  segments, and with Nagle's algorithm on every answer waits for the
  client's delayed ACK (40 ms on Linux).
- moto's record of every model object it ever made (for its dashboard) is
  off: nothing here reads it, and it kept every rollback copy below alive.
- A DynamoDB transaction keeps a copy of the items it touches to roll back
  to, instead of a deep copy of each whole table: with thousands of
  connections the copy made every transaction slower than the one before.
- A Query on the table (not an index) looks at its partition only: moto
  sorts every item of the table for each one (78 ms on a 6,000-item
  table, against 4 ms for a GetItem), so a fleet's every read by partition
  grew with the fleet.
- DynamoDB and SQS requests are served one at a time, as the services are
  atomic per request. moto's server runs each request on its own thread,
  and its backends check and then change: two concurrent ReceiveMessage
  calls could both take one FIFO message group (or the same message), and
  two conditional writes could both pass their condition.
- A long poll is a series of single looks at the queue, each under SQS's
  lock, with the lock free between them. moto's own long poll notes which
  FIFO message groups are in flight once, before it waits, so a poll that
  woke after another had taken a group could take that group's next
  message too.
"""
import copy
import functools
import socketserver
import sys
import threading
import time

socketserver.StreamRequestHandler.disable_nagle_algorithm = True

import moto.core.common_models as common_models

common_models.BaseModel.__new__ = lambda cls, *args, **kwargs: object.__new__(cls)

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table


class _TablesByReference:
    """`copy` for moto's transaction code: tables are not copied (the
    transaction below restores the items it touched); anything else is."""

    @staticmethod
    def deepcopy(value, *args, **kwargs):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(copy, name)


dynamodb_models.copy = _TablesByReference()
_transact_write_items = dynamodb_models.DynamoDBBackend.transact_write_items


def _key_of(backend, op):
    table = backend.tables.get(op.get("TableName"))
    if table is None:
        return None, None
    if "Key" in op:
        return table, op["Key"]
    attrs = op.get("Item") or {}
    key = {}
    for name in (table.hash_key_attr, table.range_key_attr):
        if name is not None and name in attrs:
            key[name] = attrs[name]
    return table, key


def transact_write_items(self, transact_items):
    before = []
    for item in transact_items:
        op = next(iter(item.values()), None) if isinstance(item, dict) else None
        if not isinstance(op, dict):
            continue
        table, key = _key_of(self, op)
        if table is None or not key:
            continue
        try:
            current = self.get_item(table.name, key)
        except Exception:
            current = None
        saved = copy.deepcopy(current.to_json()["Attributes"]) if current else None
        before.append((table.name, key, saved))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for name, key, saved in reversed(before):
            try:
                if saved is None:
                    if self.get_item(name, key) is not None:
                        self.delete_item(name, key)
                else:
                    self.put_item(name, saved)
            except Exception:
                pass
        raise


dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items

_table_query = Table.query


def table_query(self, hash_key, *args, **kwargs):
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    if index_name is not None or hash_key is None:
        return _table_query(self, hash_key, *args, **kwargs)
    # The same query, on a table of this partition only (requests on the
    # table are served one at a time, so nothing sees the swap).
    everything = self.items
    partition = type(everything)(dict) if hasattr(everything, "default_factory") else {}
    if hash_key in everything:
        partition[hash_key] = everything[hash_key]
    self.items = partition
    try:
        return _table_query(self, hash_key, *args, **kwargs)
    finally:
        self.items = everything


Table.query = table_query


def _one_at_a_time(cls, lock):
    """Every public method of a backend class runs under `lock`."""

    def locked(method):
        @functools.wraps(method)
        def run(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return run

    for name, value in list(vars(cls).items()):
        if name.startswith("_") or not callable(value) or isinstance(value, (staticmethod, classmethod, type)):
            continue
        setattr(cls, name, locked(value))


_one_at_a_time(dynamodb_models.DynamoDBBackend, threading.RLock())

import moto.sqs.models as sqs_models

_one_at_a_time(sqs_models.SQSBackend, threading.RLock())
_look_once = sqs_models.SQSBackend.receive_message


def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    """A long poll of at most `wait_seconds_timeout`: one locked look at the
    queue (which reads the groups in flight afresh) at a time. Between looks
    it waits for a new message, or briefly when the visible ones all belong
    to groups in flight (moto's wait returns at once then)."""
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        got = _look_once(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        left = deadline - time.monotonic()
        if got or left <= 0:
            return got
        queue = self.get_queue(queue_name)
        if queue.messages:
            time.sleep(min(left, 0.02))
        else:
            queue.wait_for_messages(min(left, 1))


sqs_models.SQSBackend.receive_message = receive_message

from moto.server import main

sys.exit(main(sys.argv[1:]))
