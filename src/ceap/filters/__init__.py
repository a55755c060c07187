"""Filters: keep the rows a program is for."""

from ceap.filters.base import Filter, FilterConfig

__all__ = ["Filter", "FilterConfig"]
