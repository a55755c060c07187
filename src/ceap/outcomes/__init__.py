"""Outcomes: what happened after a delivery, and whether it helped.

``tokens`` (signed tracking tokens), ``links`` (the pixel and click links the
renderer adds), ``engagement`` (delivered, opened, clicked, read...),
``goals`` (goal events from every ingestion path), ``attribution`` (goal
events to candidates, columnar), ``exports`` (the outbound stream). See
docs/outcomes.md.
"""
