"""How a record field is declared: its type (the annotation), its default, and its meaning (the record's
documentation, bench.record.fields_doc)."""

from __future__ import annotations

import dataclasses
from dataclasses import field


def doc(doc: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    """A record field with its meaning (and unit, where the name does not carry it)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})
