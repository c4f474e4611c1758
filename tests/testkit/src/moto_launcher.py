"""moto's server, with the changes the relay365 tests and benches need.

- Answers go out with TCP_NODELAY: werkzeug writes headers and body in two
  segments, and with Nagle's algorithm on every answer waits for the
  client's delayed ACK (40 ms on Linux).
- moto's record of every model object it ever made (for its dashboard) is
  off: nothing here reads it, and it kept every rollback copy below alive.
- A DynamoDB transaction keeps a copy of the items it touches to roll back
  to, instead of a deep copy of each whole table: with thousands of
  connections the copy made every transaction slower than the one before.
"""
import copy
import socketserver
import sys

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

from moto.server import main

sys.exit(main(sys.argv[1:]))
