"""Subscriptions (R4 and the R5 Backport IG): the resource, its triggers, the outbox and delivery (design §7)."""
