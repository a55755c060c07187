"""The names a template sees: its context variables, and the fields of ``candidate`` and
``profile`` (checked by ``checks``, filled by ``renderer``)."""

CONTEXT_NAMES = frozenset({"candidate", "profile", "payload", "unsubscribe_url", "preferences_url", "now",
                           "locale", "channel", "digest"})
CANDIDATE_FIELDS = frozenset({"id", "tenant_id", "program", "run_id", "customer_id", "subject_id",
                              "context", "action_type", "channels", "template", "category", "score",
                              "model", "reasons", "payload", "status", "priority", "created_at",
                              "not_before", "expires_at", "dedup_key", "variant"})
PROFILE_FIELDS = frozenset({"customer_id", "email", "phone", "push_token", "timezone", "locale",
                            "attributes"})
