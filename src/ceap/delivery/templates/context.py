"""The names a template sees: its context variables, and the fields of ``candidate`` and
``profile`` (checked by ``checks``, filled by ``renderer``); and what a program's candidates
carry (:class:`Known`)."""

from dataclasses import dataclass

CONTEXT_NAMES = frozenset({"candidate", "profile", "payload", "unsubscribe_url", "preferences_url", "now",
                           "locale", "channel", "digest"})
CANDIDATE_FIELDS = frozenset({"id", "tenant_id", "program", "run_id", "customer_id", "subject_id",
                              "context", "action_type", "channels", "template", "category", "score",
                              "model", "reasons", "payload", "status", "priority", "created_at",
                              "not_before", "expires_at", "dedup_key", "variant"})
PROFILE_FIELDS = frozenset({"customer_id", "email", "phone", "push_token", "timezone", "locale",
                            "attributes"})

DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))
#: what a digest message's template sees as ``digest`` (ceap.spec.digest.DigestView)
DIGEST_FIELDS = frozenset({"key", "count", "items", "more", "window_start", "window_end"})


@dataclass(frozen=True)
class Known:
    """What a program's candidates carry, for checking templates statically."""

    payload: frozenset[str]
    category: str = "marketing"
    #: the program has ``action.digest``: templates see ``digest`` (docs/digests.md)
    digest: bool = False
