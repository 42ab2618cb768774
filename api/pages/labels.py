"""Message ids for codes the pages show (English; the Swedish is in the catalogue).

``N_`` marks a string for extraction (``make messages``) without translating it here: the
template translates it with the page's language.
"""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    return message


STATUS = {
    "draft": N_("Draft"),
    "active": N_("Active"),
    "on-hold": N_("On hold"),
    "completed": N_("Completed"),
    "revoked": N_("Ended early"),
    "entered-in-error": N_("Entered in error"),
    "unknown": N_("Unknown"),
}
GOAL_STATUS = {
    "proposed": N_("Proposed"),
    "planned": N_("Planned"),
    "accepted": N_("Accepted"),
    "active": N_("Ongoing"),
    "on-hold": N_("On hold"),
    "completed": N_("Achieved"),
    "cancelled": N_("Cancelled"),
    "entered-in-error": N_("Entered in error"),
    "rejected": N_("Rejected"),
}
SORT = {"updated": N_("Last changed"), "start": N_("Start date"), "status": N_("Status")}
INTERACTION = {
    "read": N_("read"),
    "vread": N_("read an earlier version"),
    "search-type": N_("searched"),
    "history-instance": N_("read the history"),
    "history-type": N_("read the history"),
    "history-system": N_("read the history"),
    "operation": N_("read the agreement"),
    "create": N_("created"),
    "update": N_("changed"),
    "delete": N_("removed"),
    "transaction": N_("changed"),
}
FIELD = {"title": N_("Title"), "description": N_("The plan in plain language"), "status": N_("Status"),
         "end": N_("End date")}
