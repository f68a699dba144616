"""Page-number pagination for every list: ``?page=`` (from 1) and ``?page_size=`` (at most
MAX_PAGE_SIZE). Responses are ``{"results": [...], "next": url | null}``; ``next`` is null on
the last page (a page past the end is simply empty)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.utils.urls import replace_query_param

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100  # patient rows decrypt one by one: keep a page cheap
MAX_PAGE = 10_000  # deeper than any clinic's list; keeps OFFSET bounded


class PageQuery(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)


@dataclass(frozen=True)
class PageSlice:
    items: list
    has_next: bool
    page: int


def page_slice(queryset: QuerySet, *, page: int, page_size: int) -> PageSlice:
    """One page of an ordered queryset in one query (one row more than asked tells if there is a next)."""
    start = (page - 1) * page_size
    rows = list(queryset[start:start + page_size + 1])
    return PageSlice(items=rows[:page_size], has_next=len(rows) > page_size, page=page)


def next_url(request, result: PageSlice) -> str | None:
    if not result.has_next:
        return None
    return replace_query_param(request.build_absolute_uri(), "page", result.page + 1)
