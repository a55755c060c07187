"""Journeys: steps a customer walks through after a program selects them (docs/journeys.md)."""
