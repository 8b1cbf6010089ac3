"""One result schema, several views: rich tables and JSON."""

from .tables import Column, print_json, print_table, to_jsonable

__all__ = ["Column", "print_json", "print_table", "to_jsonable"]
