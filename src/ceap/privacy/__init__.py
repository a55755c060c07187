"""A customer's data: export, deletion with a tombstone, and the tables that hold it
(docs/privacy.md)."""

from ceap.privacy.erase import DeletionReport, delete_customer, export_customer
from ceap.privacy.tombstone import customer_hash, deleted_hashes, drop_deleted, is_deleted

__all__ = ["DeletionReport", "customer_hash", "delete_customer", "deleted_hashes", "drop_deleted",
           "export_customer", "is_deleted"]
